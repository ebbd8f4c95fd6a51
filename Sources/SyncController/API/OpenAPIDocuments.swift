import ClusterAPI
import Foundation

/// The OpenAPI documents kubectl reads before `apply` (and for `explain`): `/openapi/v3`, an index of the
/// group-versions served, and `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`, one OpenAPI 3.0 document each.
///
/// What kubectl v1.32 does with them (measured with `-v=8`): it reads the index and the kind's group-version document;
/// finding there a PATCH for the kind that takes `fieldValidation`, it leaves validation to the server and sends
/// `fieldValidation=Strict` — the server's own checking, which rejects an unknown field whatever the parameter says.
/// Without that parameter it would validate on the client from `/openapi/v2`, which it accepts only as protobuf; this
/// server publishes no v2 document, so the paths are what make `apply` work without `--validate=false`. (An apply of
/// an existing object still asks for `/openapi/v2`, for the patch type; a 404 is fine.) A PATCH declares only
/// `application/merge-patch+json`: the server applies a strategic merge patch as a merge patch, so the document does
/// not invite one (kubectl still sends one for the kinds it compiles in — ConfigMap, StorageClass, … — as it did before).
///
/// The documents depend only on `Kinds.all`, so they are built once; `?hash=` in the index is a fingerprint of each
/// document, so a client's cache notices a changed one.
enum OpenAPIDocuments {
    /// A group-version's document and its path under `/openapi/v3` ("api/v1", "apis/kubevirt.io/v1").
    struct Document: Sendable {
        let path: String
        let body: Data
        let hash: String
    }

    /// Every served group-version's document, by path.
    static let documents: [String: Document] = {
        var byGroupVersion: [String: [ResourceKind]] = [:]
        for kind in Kinds.all { byGroupVersion[kind.pathPrefix, default: []].append(kind) }
        var documents: [String: Document] = [:]
        for (prefix, kinds) in byGroupVersion {
            let path = String(prefix.dropFirst())
            let body = document(kinds).jsonData()
            documents[path] = Document(path: path, body: body, hash: fingerprint(body))
        }
        return documents
    }()

    /// `/openapi/v3`: where each group-version's document is.
    static let index: JSONValue = [
        "paths": .object(
            documents.mapValues { ["serverRelativeURL": .string("/openapi/v3/\($0.path)?hash=\($0.hash)")] })
    ]

    /// Answers `GET /openapi/…` (`segments` without "openapi"); any authenticated client may read them, as discovery.
    static func answer(_ request: APIRequest, _ segments: ArraySlice<String>) throws(APIError) -> APIResponse {
        guard request.method == "GET" else { throw ClusterAPIHandler.methodNotAllowed(request) }
        switch segments.first {
        case "v3":
            let path = segments.dropFirst().joined(separator: "/")
            if path.isEmpty { return .json(index) }
            // `?hash=` names the version the client expects; there is only the current one.
            guard let document = documents[path] else {
                throw APIError.notFound(
                    "the server could not find the requested resource (path \(request.path)): OpenAPI v3 documents are served for "
                        + documents.keys.sorted().joined(separator: ", "))
            }
            return .full(status: 200, contentType: "application/json", body: document.body)
        case "v2":
            throw APIError.notFound(
                "the server could not find the requested resource (path \(request.path)): no OpenAPI v2 document is served; "
                    + "the schemas are at /openapi/v3")
        default:
            throw APIError.notFound(
                "the server could not find the requested resource (path \(request.path)): OpenAPI is served at /openapi/v3"
            )
        }
    }

    /// The OpenAPI 3.0 document of one group-version: its kinds and lists under `components.schemas`, with ObjectMeta
    /// and ListMeta they refer to, and the paths the API serves them at.
    static func document(_ kinds: [ResourceKind]) -> JSONValue {
        var schemas: [String: JSONValue] = [
            OpenAPISchema.objectMetaName: OpenAPISchema.objectMeta, OpenAPISchema.listMetaName: OpenAPISchema.listMeta,
        ]
        var paths: [String: JSONValue] = [:]
        for kind in kinds {
            schemas[OpenAPISchema.name(of: kind)] = OpenAPISchema.object(kind)
            schemas[OpenAPISchema.listName(of: kind)] = OpenAPISchema.list(kind)
            paths.merge(Self.paths(kind)) { $1 }
        }
        let groupVersion = kinds.first?.apiVersion ?? ""
        return [
            "openapi": "3.0.0",
            "info": ["title": "vmsync cluster API", "version": .string(groupVersion)],
            "paths": .object(paths),
            "components": ["schemas": .object(schemas)],
        ]
    }

    /// The paths of `kind`: its collection (in a namespace, and across them for namespaced kinds), one object, and its
    /// status when it has one.
    static func paths(_ kind: ResourceKind) -> [String: JSONValue] {
        let collection =
            kind.namespaced
            ? "\(kind.pathPrefix)/namespaces/{namespace}/\(kind.plural)" : "\(kind.pathPrefix)/\(kind.plural)"
        let scope: [JSONValue] = kind.namespaced ? [pathParameter("namespace")] : []
        let object = collection + "/{name}"
        let objectScope = scope + [pathParameter("name")]
        var paths: [String: JSONValue] = [
            collection: [
                "parameters": .array(scope),
                "get": operation(kind, "list", parameters: listParameters, response: OpenAPISchema.listName(of: kind)),
                "post": operation(
                    kind, "post", parameters: [fieldValidation], body: ["application/json", "application/yaml"],
                    response: OpenAPISchema.name(of: kind), created: true),
                "delete": operation(
                    kind, "deletecollection", parameters: selectors, response: OpenAPISchema.listName(of: kind)),
            ],
            object: writablePath(kind, parameters: objectScope),
        ]
        if kind.namespaced {
            paths["\(kind.pathPrefix)/\(kind.plural)"] = [
                "get": operation(kind, "list", parameters: listParameters, response: OpenAPISchema.listName(of: kind))
            ]
        }
        if kind.hasStatus {
            var status = writablePath(kind, parameters: objectScope)
            status["delete"] = nil
            paths[object + "/status"] = status
        }
        return paths
    }

    /// GET, PUT, PATCH (and DELETE) of one object or its status.
    private static func writablePath(_ kind: ResourceKind, parameters: [JSONValue]) -> JSONValue {
        let name = OpenAPISchema.name(of: kind)
        return [
            "parameters": .array(parameters),
            "get": operation(kind, "get", parameters: [], response: name),
            "put": operation(
                kind, "put", parameters: [fieldValidation], body: ["application/json", "application/yaml"],
                response: name),
            "patch": operation(
                kind, "patch", parameters: [fieldValidation], body: ["application/merge-patch+json"], response: name),
            "delete": operation(kind, "delete", parameters: [], response: name),
        ]
    }

    private static func operation(
        _ kind: ResourceKind, _ action: String, parameters: [JSONValue], body: [String] = [], response: String,
        created: Bool = false
    ) -> JSONValue {
        var operation: JSONValue = [
            "x-kubernetes-action": .string(action),
            "x-kubernetes-group-version-kind": [
                "group": .string(kind.group), "version": .string(kind.version), "kind": .string(kind.kind),
            ],
            "parameters": .array(parameters),
            "responses": [
                created ? "201" : "200": [
                    "description": "OK",
                    "content": ["application/json": ["schema": OpenAPISchema.reference(response)]],
                ]
            ],
        ]
        if !body.isEmpty {
            // A merge patch is a partial object; the other writes send a whole one.
            let schema: JSONValue =
                action == "patch" ? ["type": "object"] : OpenAPISchema.reference(OpenAPISchema.name(of: kind))
            let content = Dictionary(
                uniqueKeysWithValues: body.map { type -> (String, JSONValue) in (type, ["schema": schema]) })
            operation["requestBody"] = ["required": true, "content": .object(content)]
        }
        return operation
    }

    private static func pathParameter(_ name: String) -> JSONValue {
        ["name": .string(name), "in": "path", "required": true, "schema": ["type": "string"]]
    }

    private static func queryParameter(_ name: String, _ type: String, _ description: String) -> JSONValue {
        ["name": .string(name), "in": "query", "schema": ["type": .string(type)], "description": .string(description)]
    }

    /// Declared on every write so kubectl leaves validation to the server. The server checks strictly whatever it
    /// says: an unknown field is an error (`Strict`).
    private static let fieldValidation = queryParameter(
        "fieldValidation", "string",
        "Accepted for kubectl; the server always validates strictly: an unknown field is an error.")

    private static let selectors = [
        queryParameter("labelSelector", "string", "Only objects whose labels match."),
        queryParameter("fieldSelector", "string", "Only objects whose fields match."),
    ]

    private static let listParameters =
        selectors + [
            queryParameter("watch", "boolean", "Stream changes as watch events."),
            queryParameter("resourceVersion", "string", "With watch: the changes after this version."),
            queryParameter("timeoutSeconds", "integer", "With watch: how long it lasts."),
        ]

    /// FNV-1a (64 bits) of `data` in hex: stable across runs and processes, enough to tell versions apart.
    static func fingerprint(_ data: Data) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16, uppercase: true)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
