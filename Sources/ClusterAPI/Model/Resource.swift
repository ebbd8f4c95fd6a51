/// A kind of cluster object with a typed view: what reconcilers and agents read and change. The stored object stays a
/// `JSONValue` (the lossless envelope); a typed object is decoded from it and written back only as the merge patch of
/// the fields it changed, so fields this view does not model are never lost.
public protocol Resource: Codable, Sendable, Hashable {
    /// The kind's API description (path, schema, columns).
    static var kind: ResourceKind { get }
    var metadata: ObjectMeta { get set }
}

extension Resource {
    /// The typed view of a stored or received object.
    public init(json: JSONValue) throws(APIError) {
        do {
            self = try json.decode(Self.self)
        } catch {
            throw APIError(
                .invalid, code: 422,
                "\(Self.kind.kind) \"\(json["metadata"]?["name"]?.string ?? "")\" cannot be read: \(error)")
        }
    }

    /// The fields this view models, as JSON.
    public var json: JSONValue { (try? JSONValue(encoding: self)) ?? .null }

    /// `namespace/name` (or `name` for cluster-scoped kinds): the key a work queue and a cache use.
    public var key: ObjectKey {
        ObjectKey(namespace: Self.kind.namespaced ? metadata.namespace ?? "default" : nil, name: metadata.name ?? "")
    }

    /// The merge patch that turns `self` into `changed` (nil when nothing changed), split into what goes through the
    /// main resource and what through `/status`. Only modelled fields can appear in it.
    public func patch(to changed: Self) -> (main: JSONValue?, status: JSONValue?) {
        guard var difference = JSONValue.mergePatch(from: json, to: changed.json) else { return (nil, nil) }
        let status = difference["status"]
        difference["status"] = nil
        let main: JSONValue? = difference.object?.isEmpty == false ? difference : nil
        return (main, status.map { ["status": $0] })
    }
}

/// Which object: its namespace (nil for cluster-scoped kinds) and name.
public struct ObjectKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String?
    public var name: String

    public init(namespace: String?, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { namespace.map { "\($0)/\(name)" } ?? name }

    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
        (lhs.namespace ?? "", lhs.name) < (rhs.namespace ?? "", rhs.name)
    }
}

extension JSONValue {
    /// The RFC 7386 merge patch that turns `old` into `new`: changed members, `null` for removed ones; nil when the two
    /// are equal. Arrays are replaced whole, as merge patches do.
    public static func mergePatch(from old: JSONValue, to new: JSONValue) -> JSONValue? {
        guard old != new else { return nil }
        guard case .object(let before) = old, case .object(let after) = new else { return new }
        var patch: [String: JSONValue] = [:]
        for (key, value) in after {
            if let previous = before[key] {
                if let change = mergePatch(from: previous, to: value) {
                    // `null` inside a patch means "remove": a value that became null is removed, as Kubernetes does.
                    patch[key] = change
                }
            } else if value != .null {
                patch[key] = value
            }
        }
        for key in before.keys where after[key] == nil { patch[key] = .null }
        return patch.isEmpty ? nil : .object(patch)
    }
}

/// A phase or other string enumeration read leniently: a value this version does not know reads as `fallback`
/// (the stored text is untouched, since only changed fields are written back).
public protocol LenientStringEnum: RawRepresentable<String>, Codable, Sendable, Hashable, CaseIterable {
    static var fallback: Self { get }
}

extension LenientStringEnum {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = Self(rawValue: text) ?? Self.fallback
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
