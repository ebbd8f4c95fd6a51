/// One kind of resource the cluster API serves: where it lives in the API and what its body may hold.
public struct ResourceKind: Sendable {
    /// API group ("" for the core group).
    public let group: String
    /// API version.
    public let version: String
    /// Kind, e.g. "VirtualMachine".
    public let kind: String
    /// Plural resource name used in paths, e.g. "virtualmachines".
    public let plural: String
    /// Singular name.
    public let singular: String
    /// Short names (`vm`, `vmi`, `vmim`, …).
    public let shortNames: [String]
    /// Namespaced, or cluster-scoped.
    public let namespaced: Bool
    /// The schema of `spec` (or of the top-level data members for kinds without a spec).
    let body: [String: Schema]
    /// Required top-level members besides apiVersion/kind/metadata.
    let requiredBody: Set<String>
    /// Whether the kind has a `/status` subresource.
    public let hasStatus: Bool
    /// Columns for tables (`syncctl get`, kubectl's Table): header and a path into the object.
    public let columns: [Column]

    /// A table column.
    public struct Column: Sendable {
        public let name: String
        public let path: [String]
    }

    /// "kubevirt.io/v1", or "v1" for the core group.
    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    /// "virtualmachines.kubevirt.io", or "configmaps".
    public var resource: String { group.isEmpty ? plural : "\(plural).\(group)" }
    /// The list kind, e.g. "VirtualMachineList".
    public var listKind: String { kind + "List" }
    /// The API path prefix: "/apis/kubevirt.io/v1" or "/api/v1".
    public var pathPrefix: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

    /// The path of the collection (in `namespace` for namespaced kinds).
    public func collectionPath(namespace: String?) -> String {
        if namespaced, let namespace { return "\(pathPrefix)/namespaces/\(namespace)/\(plural)" }
        return "\(pathPrefix)/\(plural)"
    }

    /// The path of one object.
    public func objectPath(namespace: String?, name: String) -> String {
        "\(collectionPath(namespace: namespace))/\(name)"
    }

    /// The schema of a whole object of this kind.
    var schema: Schema {
        var members = body
        members["apiVersion"] = .string()
        members["kind"] = .string()
        members["metadata"] = ObjectMeta.schema
        if hasStatus { members["status"] = .any }
        return .object(members, required: requiredBody)
    }

    /// Checks a body of this kind; the error lists every problem, naming the field.
    public func validate(_ object: JSONValue) throws(APIError) {
        try report(schema.validate(object, at: ""), object)
    }

    /// Checks a changed body: a problem the stored object already had, left as it was (an earlier version accepted
    /// the value), does not block the write — Kubernetes' validation ratcheting — so a status can still be recorded
    /// on an object whose spec is no longer valid; anything new or changed is checked in full.
    public func validate(_ object: JSONValue, ratchetingFrom existing: JSONValue) throws(APIError) {
        let known = Set(schema.validate(existing, at: ""))
        try report(schema.validate(object, at: "").filter { !known.contains($0) }, object)
    }

    private func report(_ errors: [FieldError], _ object: JSONValue) throws(APIError) {
        guard !errors.isEmpty else { return }
        let name = object["metadata"]?["name"]?.string ?? ""
        let text = errors.map(\.description).joined(separator: ", ")
        throw APIError(
            .invalid, code: 422, "\(kind).\(group.isEmpty ? "core" : group) \"\(name)\" is invalid: \(text)",
            details: .init(name: name, group: group, kind: kind, causes: errors))
    }
}

/// The common `metadata` of every object.
extension ObjectMeta {
    static let ownerReference = Schema.object(
        [
            "apiVersion": .string(), "kind": .string(), "name": .string(), "uid": .string(), "controller": .boolean,
            "blockOwnerDeletion": .boolean,
        ], required: ["apiVersion", "kind", "name", "uid"])

    static let schema = Schema.fields([
        "name": .string(), "generateName": .string(), "namespace": .string(), "uid": .string(),
        "resourceVersion": .string(), "generation": .integer(), "creationTimestamp": .any, "deletionTimestamp": .any,
        "deletionGracePeriodSeconds": .integer(), "labels": .stringMap, "annotations": .stringMap,
        "ownerReferences": .array(ownerReference), "finalizers": .array(.string()), "managedFields": .any,
        "selfLink": .string(),
    ])
}
