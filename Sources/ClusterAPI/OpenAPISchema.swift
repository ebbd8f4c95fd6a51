/// The schemas the server validates bodies with (`Schema`), in the OpenAPI 3.0 form Kubernetes publishes at
/// `/openapi/v3`: kubectl finds a kind's schema there by `x-kubernetes-group-version-kind` (for `apply`, `explain`),
/// so the published shape is derived from the one the server enforces and the two cannot drift apart.
///
/// The mapping follows Kubernetes' structural schemas: an object lists its `properties`, and a member it does not list
/// is unknown (the server rejects it) unless the object has `additionalProperties` (maps such as labels); a part the
/// server keeps without modelling it (`Schema.any`: affinity rules, `status`, …) carries
/// `x-kubernetes-preserve-unknown-fields: true`, so no client flags what the server accepts there.
public enum OpenAPISchema {
    /// ObjectMeta's name under `components.schemas`: Kubernetes' own, which tools recognise.
    public static let objectMetaName = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    /// ListMeta's name under `components.schemas`.
    public static let listMetaName = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"

    /// A `$ref` to the component `name`.
    public static func reference(_ name: String) -> JSONValue {
        ["$ref": .string("#/components/schemas/\(name)")]
    }

    /// The component name of `kind`, by Kubernetes' convention: the core and `*.k8s.io` groups under `io.k8s.api`,
    /// any other group reversed (`io.kubevirt.v1.VirtualMachine`, `io.kubevirt.cdi.v1beta1.DataVolume`).
    public static func name(of kind: ResourceKind) -> String {
        "\(namespace(group: kind.group, version: kind.version)).\(kind.kind)"
    }

    /// The component name of `kind`'s list (`io.kubevirt.v1.VirtualMachineList`).
    public static func listName(of kind: ResourceKind) -> String {
        "\(namespace(group: kind.group, version: kind.version)).\(kind.listKind)"
    }

    /// The common `metadata` of every object: the members the server accepts there, nothing else.
    public static var objectMeta: JSONValue {
        var schema = convert(ObjectMeta.schema)
        schema["description"] = "Standard object metadata: name, namespace, labels, annotations, owners, finalizers."
        return schema
    }

    /// A list's `metadata` as the server writes it.
    public static var listMeta: JSONValue {
        [
            "type": "object", "description": "Standard list metadata.",
            "properties": ["resourceVersion": ["type": "string"], "continue": ["type": "string"]],
        ]
    }

    /// The schema of a whole object of `kind`: what the server validates a body of that kind with, `metadata` as a
    /// reference to ObjectMeta, tagged with the kind's group, version and kind.
    public static func object(_ kind: ResourceKind) -> JSONValue {
        var schema = convert(kind.schema)
        schema["properties"]?["metadata"] = reference(objectMetaName)
        schema["description"] = .string("\(kind.kind) (\(kind.apiVersion)), as vmsync serves it.")
        schema["x-kubernetes-group-version-kind"] = groupVersionKind(kind, kind: kind.kind)
        return schema
    }

    /// The schema of `kind`'s list, as a collection GET answers it.
    public static func list(_ kind: ResourceKind) -> JSONValue {
        [
            "type": "object", "description": .string("A list of \(kind.kind) objects."), "required": ["items"],
            "properties": [
                "apiVersion": ["type": "string"], "kind": ["type": "string"], "metadata": reference(listMetaName),
                "items": ["type": "array", "items": reference(name(of: kind))],
            ],
            "x-kubernetes-group-version-kind": groupVersionKind(kind, kind: kind.listKind),
        ]
    }

    /// `schema` in OpenAPI 3.0 form. A rule across members (`Schema.checked`) has no OpenAPI form; the server still
    /// enforces it, so only its members' shapes are published.
    public static func convert(_ schema: Schema) -> JSONValue {
        switch schema {
        case .object(let members, let required, let additional):
            var object: JSONValue = ["type": "object"]
            if !members.isEmpty { object["properties"] = .object(members.mapValues(convert)) }
            if !required.isEmpty { object["required"] = .array(required.sorted().map { .string($0) }) }
            if let additional { object["additionalProperties"] = convert(additional) }
            return object
        case .array(let element):
            return ["type": "array", "items": convert(element)]
        case .string(let allowed):
            var string: JSONValue = ["type": "string"]
            if let allowed { string["enum"] = .array(allowed.map { .string($0) }) }
            return string
        case .integer(let minimum, let maximum):
            var integer: JSONValue = ["type": "integer", "format": "int64"]
            if let minimum { integer["minimum"] = .int(minimum) }
            if let maximum { integer["maximum"] = .int(maximum) }
            return integer
        case .number:
            return ["type": "number"]
        case .boolean:
            return ["type": "boolean"]
        case .quantity:
            // Kubernetes' Quantity: a number or a string with a suffix ("128Mi").
            return [
                "oneOf": [["type": "string"], ["type": "number"]],
                "description": "A quantity: a number or a string such as 128Mi, 10Gi, 500m.",
            ]
        case .any:
            return ["x-kubernetes-preserve-unknown-fields": true]
        case .checked(let inner, _):
            return convert(inner)
        }
    }

    private static func groupVersionKind(_ resource: ResourceKind, kind: String) -> JSONValue {
        [["group": .string(resource.group), "version": .string(resource.version), "kind": .string(kind)]]
    }

    /// `io.k8s.api.core.v1`, `io.k8s.api.storage.v1`, `io.kubevirt.cdi.v1beta1`, …
    private static func namespace(group: String, version: String) -> String {
        if group.isEmpty { return "io.k8s.api.core.\(version)" }
        if group.hasSuffix(".k8s.io") { return "io.k8s.api.\(group.dropLast(".k8s.io".count)).\(version)" }
        return "\(group.split(separator: ".").reversed().joined(separator: ".")).\(version)"
    }
}
