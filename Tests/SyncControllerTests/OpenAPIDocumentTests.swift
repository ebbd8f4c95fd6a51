import ClusterAPI
import Foundation
import SyncController
import TestSupport
import Testing

@testable import TLSTransport

/// The OpenAPI documents as the handler serves them, in process: every served kind under its group-version with its
/// GVK, the shapes the server enforces, and Status errors for what is not served.
@Suite("OpenAPI v3 documents")
final class OpenAPIDocumentTests: Sendable {
    let handler: ClusterAPIHandler
    let peer: PeerIdentity
    let directory: String

    init() throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("openapi-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        handler = ClusterAPIHandler(store: try SQLiteStore(path: directory + "/cluster.sqlite"))
        let authority = try CertificateAuthority.create(cluster: "alpha")
        peer = PeerIdentity(certificate: try authority.issue(LeafRequest(role: .user, name: "admin")).certificate)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Every group-version the API serves, as the index names them ("api/v1", "apis/kubevirt.io/v1").
    static let groupVersions = Set(
        Kinds.all.map { $0.group.isEmpty ? "api/\($0.version)" : "apis/\($0.group)/\($0.version)" })

    @Test(
        "the index lists every served group-version, each with a hashed URL; each document holds every kind of its group-version (and its list) with its GVK, metadata as ObjectMeta, and a PATCH that takes fieldValidation"
    )
    func everyKindWithItsGroupVersionKind() async throws {
        let index = try await get("/openapi/v3")
        let paths = try #require(index["paths"]?.object)
        #expect(Set(paths.keys) == Self.groupVersions)
        var seen: Set<String> = []
        for (groupVersion, entry) in paths {
            let url = try #require(entry["serverRelativeURL"]?.string)
            #expect(
                url.hasPrefix("/openapi/v3/\(groupVersion)?hash=")
                    && url.count > "/openapi/v3/\(groupVersion)?hash=".count, "\(url)")
            let document = try await get(url)
            #expect(document["openapi"]?.string?.hasPrefix("3.0") == true)
            let schemas = try #require(document["components"]?["schemas"])
            #expect(
                schemas[OpenAPISchema.objectMetaName]?["properties"]?["labels"]?["additionalProperties"] == [
                    "type": "string"
                ])
            for kind in Kinds.all where kind.pathPrefix == "/" + groupVersion {
                seen.insert(kind.kind)
                let schema = try #require(schemas[OpenAPISchema.name(of: kind)], "\(kind.kind) in \(groupVersion)")
                let groupVersionKind: JSONValue = [
                    "group": .string(kind.group), "version": .string(kind.version), "kind": .string(kind.kind),
                ]
                #expect(schema["x-kubernetes-group-version-kind"] == [groupVersionKind])
                #expect(
                    schema["properties"]?["metadata"] == [
                        "$ref": .string("#/components/schemas/\(OpenAPISchema.objectMetaName)")
                    ])
                #expect(
                    schema["properties"]?["apiVersion"] == ["type": "string"]
                        && schema["properties"]?["kind"] == ["type": "string"])
                if kind.hasStatus {
                    #expect(schema["properties"]?["status"] == ["x-kubernetes-preserve-unknown-fields": true])
                }
                let list = try #require(schemas[OpenAPISchema.listName(of: kind)])
                #expect(list["x-kubernetes-group-version-kind"]?.array?.first?["kind"] == .string(kind.listKind))
                // What makes kubectl leave validation to the server instead of asking for /openapi/v2.
                let object = kind.collectionPath(namespace: kind.namespaced ? "{namespace}" : nil) + "/{name}"
                let patch = try #require(document["paths"]?[object]?["patch"], "PATCH \(object)")
                #expect(patch["x-kubernetes-group-version-kind"]?["kind"] == .string(kind.kind))
                #expect(
                    patch["parameters"]?.array?.contains { $0["name"] == "fieldValidation" && $0["in"] == "query" }
                        == true)
                #expect(
                    patch["requestBody"]?["content"]?.object.map { Array($0.keys) } == ["application/merge-patch+json"],
                    "no strategic merge patch: the server applies one as a merge patch")
            }
        }
        #expect(seen == Set(Kinds.all.map(\.kind)), "every served kind is published")
    }

    @Test("the published schemas accept the seed's manifests and flag the unknown fields the server refuses")
    func schemasAgreeWithTheServer() async throws {
        let kubevirt = try await get("/openapi/v3/apis/kubevirt.io/v1")
        let cdi = try await get("/openapi/v3/apis/cdi.kubevirt.io/v1beta1")
        let vm = try #require(try YAML.documents(seedVirtualMachine).first)
        let dv = try #require(
            try YAML.documents(seedDataVolume.replacingOccurrences(of: "<other storage class>", with: "local")).first)
        #expect(unknownFields(vm, in: kubevirt, kind: Kinds.virtualMachine).isEmpty)
        #expect(unknownFields(dv, in: cdi, kind: Kinds.dataVolume).isEmpty)
        try Kinds.virtualMachine.validate(vm)
        try Kinds.dataVolume.validate(dv)

        var typo = vm
        typo["spec"]?["runStategy"] = "Always"
        typo["colour"] = "blue"
        // Free-form parts (`template.metadata`, affinity) take anything, as the server does.
        typo["spec"]?["template"]?["metadata"]?["anything"] = ["goes": true]
        typo["spec"]?["template"]?["spec"]?["affinity"] = ["nodeAffinity": ["whatever": 1]]
        #expect(unknownFields(typo, in: kubevirt, kind: Kinds.virtualMachine) == ["colour", "spec.runStategy"])
        let refused = #expect(throws: APIError.self) { try Kinds.virtualMachine.validate(typo) }
        #expect(
            refused?.details?.causes.filter { $0.reason == .unknown }.map(\.field).sorted() == [
                "colour", "spec.runStategy",
            ])
    }

    @Test(
        "each Schema case has its OpenAPI form: free-form parts preserve unknown fields, maps have additionalProperties, objects are closed"
    )
    func schemaCases() {
        #expect(OpenAPISchema.convert(.any) == ["x-kubernetes-preserve-unknown-fields": true])
        #expect(
            OpenAPISchema.convert(.object(["a": .boolean], required: ["a"], additional: nil))
                == ["type": "object", "properties": ["a": ["type": "boolean"]], "required": ["a"]])
        #expect(
            OpenAPISchema.convert(.object([:], additional: .string())) == [
                "type": "object", "additionalProperties": ["type": "string"],
            ])
        #expect(
            OpenAPISchema.convert(.string(allowed: ["Delete", "Retain"])) == [
                "type": "string", "enum": ["Delete", "Retain"],
            ])
        #expect(
            OpenAPISchema.convert(.integer(minimum: 1, maximum: 5)) == [
                "type": "integer", "format": "int64", "minimum": 1, "maximum": 5,
            ])
        #expect(OpenAPISchema.convert(.array(.number)) == ["type": "array", "items": ["type": "number"]])
        #expect(OpenAPISchema.convert(.quantity)["oneOf"] == [["type": "string"], ["type": "number"]])
        #expect(OpenAPISchema.name(of: Kinds.dataVolume) == "io.kubevirt.cdi.v1beta1.DataVolume")
        #expect(OpenAPISchema.name(of: Kinds.configMap) == "io.k8s.api.core.v1.ConfigMap")
        #expect(OpenAPISchema.name(of: Kinds.storageClass) == "io.k8s.api.storage.v1.StorageClass")
    }

    @Test(
        "JSON for every document; an unknown OpenAPI path, /openapi/v2 (which kubectl asks for as protobuf) and a write are answered with a Status",
        arguments: [
            (
                "GET", "/openapi/v3/apis/nothing.example/v1", 404, "NotFound",
                "OpenAPI v3 documents are served for api/v1"
            ),
            ("GET", "/openapi/v3/apis/kubevirt.io/v2", 404, "NotFound", "apis/kubevirt.io/v1"),
            ("GET", "/openapi/v2", 404, "NotFound", "no OpenAPI v2 document is served; the schemas are at /openapi/v3"),
            ("GET", "/openapi", 404, "NotFound", "OpenAPI is served at /openapi/v3"),
            ("POST", "/openapi/v3", 405, "MethodNotAllowed", "does not allow this method"),
        ])
    func statusForWhatIsNotServed(method: String, path: String, code: Int, reason: String, message: String) async throws
    {
        let request = APIRequest(
            method: method, uri: path,
            headers: [("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")], body: Data(),
            peer: peer)
        guard case .full(let status, let type, let body) = await handler.handle(request) else {
            Issue.record("a full response")
            return
        }
        let answer = try JSONValue.parse(body)
        #expect(status == code && type == "application/json")
        #expect(
            answer["kind"] == "Status" && answer["reason"] == .string(reason) && answer["code"] == .int(Int64(code)))
        #expect(answer["message"]?.string?.contains(message) == true, "\(answer)")
    }

    /// The body of a GET that must succeed with JSON.
    private func get(_ uri: String) async throws -> JSONValue {
        let response = await handler.handle(
            APIRequest(method: "GET", uri: uri, headers: [("Accept", "application/json")], body: Data(), peer: peer))
        guard case .full(let status, let type, let body) = response, status == 200, type == "application/json" else {
            Issue.record("GET \(uri): \(response)")
            return .null
        }
        return try JSONValue.parse(body)
    }

    /// The fields of `object` a structural-schema client would call unknown by the published schema: a member that is
    /// not among an object's `properties`, where the object has no `additionalProperties` and does not preserve
    /// unknown fields.
    private func unknownFields(_ object: JSONValue, in document: JSONValue, kind: ResourceKind) -> [String] {
        let schemas = document["components"]?["schemas"] ?? [:]
        func resolve(_ schema: JSONValue) -> JSONValue {
            guard let reference = schema["$ref"]?.string else { return schema }
            return schemas[String(reference.dropFirst("#/components/schemas/".count))] ?? .null
        }
        func walk(_ value: JSONValue, _ schema: JSONValue, _ path: String) -> [String] {
            let schema = resolve(schema)
            if schema["x-kubernetes-preserve-unknown-fields"] == true { return [] }
            switch value {
            case .object(let members):
                return members.keys.sorted().flatMap { name -> [String] in
                    let field = path.isEmpty ? name : "\(path).\(name)"
                    guard let member = schema["properties"]?[name] ?? schema["additionalProperties"] else {
                        return [field]
                    }
                    return walk(members[name]!, member, field)
                }
            case .array(let elements):
                return elements.enumerated().flatMap { walk($1, schema["items"] ?? .null, "\(path)[\($0)]") }
            default:
                return []
            }
        }
        return walk(object, schemas[OpenAPISchema.name(of: kind)] ?? .null, "")
    }
}
