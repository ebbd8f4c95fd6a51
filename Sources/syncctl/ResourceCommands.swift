import ArgumentParser
import ClusterAPI
import ClusterClient
import Foundation
import TLSTransport

/// Options every command that talks to a cluster takes.
struct ClusterOptions: ParsableArguments {
    @Option(help: "The kubeconfig (default: $VMSYNC_CONFIG, else ~/.config/vmsync/config).") var kubeconfig: String?
    @Option(help: "The kubeconfig context to use (default: its current-context).") var context: String?
    @Option(name: [.short, .long], help: "The namespace (default: the context's).") var namespace: String?

    func connect() throws(CLIError) -> (client: APIClient, namespace: String) {
        try Self.connect(kubeconfig: kubeconfig, context: context, namespace: namespace)
    }

    /// A client of the cluster a kubeconfig (and context) names.
    static func connect(kubeconfig: String?, context: String?, namespace: String? = nil) throws(CLIError)
        -> (client: APIClient, namespace: String)
    {
        let target = try Kubeconfig.load(Kubeconfig.path(kubeconfig)).target(context: context)
        return (APIClient(endpoint: target.endpoint, provider: target.provider), namespace ?? target.namespace)
    }
}

/// Runs a command body; any failure becomes one line on stderr and exit status 1.
func reportingFailures(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as APIError {
        FileHandle.standardError.write(
            Data("syncctl: Error from server (\(error.reason.rawValue)): \(error.message)\n".utf8))
        throw ExitCode(1)
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("syncctl: \(error.description)\n".utf8))
        throw ExitCode(1)
    } catch let error as TransportError {
        FileHandle.standardError.write(Data("syncctl: \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}

func kind(named name: String) throws(CLIError) -> ResourceKind {
    guard let kind = Kinds.lookup(name: name) else {
        let known = Kinds.all.map { $0.shortNames.first ?? $0.plural }.joined(separator: ", ")
        throw CLIError("the server doesn't have a resource type \"\(name)\" (known: \(known))")
    }
    return kind
}

/// Reads manifests from a file or stdin ("-").
func manifests(_ file: String) throws -> [JSONValue] {
    let text: String
    if file == "-" {
        text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    } else {
        guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw CLIError("cannot read \(file)")
        }
        text = contents
    }
    let documents = try YAML.documents(text)
    guard !documents.isEmpty else { throw CLIError("\(file) holds no objects") }
    return documents
}

func manifestKind(of object: JSONValue, in file: String) throws(CLIError) -> ResourceKind {
    guard let apiVersion = object["apiVersion"]?.string, let name = object["kind"]?.string else {
        throw CLIError("an object in \(file) has no apiVersion or kind")
    }
    guard let kind = Kinds.lookup(apiVersion: apiVersion, kind: name) else {
        throw CLIError("no kind \"\(name)\" in version \"\(apiVersion)\" (from \(file))")
    }
    return kind
}

/// `syncctl apply -f FILE|-`: creates what is missing, updates what differs.
struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or update the objects of a (multi-document) YAML file.")
    @OptionGroup var cluster: ClusterOptions
    @Option(name: [.short, .customLong("filename")], help: "The manifest file, or - for stdin.") var file: String

    func run() async throws {
        try await reportingFailures {
            let (client, namespace) = try cluster.connect()
            for var object in try manifests(file) {
                let kind = try manifestKind(of: object, in: file)
                let name = object["metadata"]?["name"]?.string ?? ""
                if kind.namespaced, object["metadata"]?["namespace"] == nil {
                    object["metadata"]?["namespace"] = .string(namespace)
                }
                let objectNamespace = kind.namespaced ? object["metadata"]?["namespace"]?.string : nil
                let label =
                    "\(kind.singular).\(kind.group.isEmpty ? "" : kind.group)".trimmingCharacters(
                        in: CharacterSet(charactersIn: ".")) + "/\(name)"
                do {
                    let existing = try await client.get(kind, namespace: objectNamespace, name: name)
                    var updated = object
                    updated["status"] = nil
                    var metadata = existing["metadata"] ?? [:]
                    for (key, value) in object["metadata"]?.object ?? [:] { metadata[key] = value }
                    updated["metadata"] = metadata
                    var before = existing
                    before["status"] = nil
                    if before == updated {
                        print("\(label) unchanged")
                    } else {
                        _ = try await client.update(kind, updated)
                        print("\(label) configured")
                    }
                } catch let error as APIError where error.code == 404 {
                    _ = try await client.create(kind, object)
                    print("\(label) created")
                }
            }
        }
    }
}

/// `syncctl get KIND [NAME]`.
struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List objects of a kind, or show one (table, -o yaml|json, -w to watch).")
    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The kind: vm, vmi, vmim, dv, node, sc, cm, secret, kubevirt, …") var kind: String
    @Argument(help: "An object's name.") var name: String?
    @Option(name: [.short, .long], help: "Output: table (default), yaml, json, wide.") var output = "table"
    @Option(name: [.short, .customLong("selector")], help: "Label selector.") var selector: String?
    @Flag(name: [.short, .long], help: "Watch for changes after listing.") var watch = false
    @Flag(name: [.short, .customLong("all-namespaces")], help: "All namespaces.") var allNamespaces = false

    func validate() throws {
        guard ["table", "yaml", "json", "wide", "name"].contains(output) else {
            throw ValidationError("-o must be table, wide, yaml, json or name")
        }
    }

    func run() async throws {
        try await reportingFailures {
            let kind = try ClusterAPI.Kinds.lookup(name: self.kind).orThrow(
                CLIError("the server doesn't have a resource type \"\(self.kind)\""))
            let (client, namespace) = try cluster.connect()
            let scope = kind.namespaced && !allNamespaces ? namespace : nil
            let objects: [JSONValue]
            var resourceVersion: String?
            if let name {
                objects = [try await client.get(kind, namespace: scope ?? namespace, name: name)]
            } else {
                let list = try await client.list(kind, namespace: scope, labelSelector: selector)
                objects = list["items"]?.array ?? []
                resourceVersion = list["metadata"]?["resourceVersion"]?.string
            }
            let printer = Printer(kind: kind, format: output, showNamespace: kind.namespaced && allNamespaces)
            printer.print(objects, list: name == nil)
            guard watch else { return }
            let events = try await client.watch(
                kind, namespace: scope, labelSelector: selector, fieldSelector: name.map { "metadata.name=\($0)" },
                resourceVersion: resourceVersion ?? "0")
            for try await event in events where !(resourceVersion == nil && event.type == "ADDED" && name != nil) {
                printer.print([event.object], list: false, headers: false, event: event.type)
            }
        }
    }
}

/// `syncctl describe KIND NAME`.
struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an object in detail: metadata, spec, status, conditions.")
    @OptionGroup var cluster: ClusterOptions
    @Argument var kind: String
    @Argument var name: String

    func run() async throws {
        try await reportingFailures {
            let kind = try ClusterAPI.Kinds.lookup(name: self.kind).orThrow(
                CLIError("the server doesn't have a resource type \"\(self.kind)\""))
            let (client, namespace) = try cluster.connect()
            let object = try await client.get(kind, namespace: namespace, name: name)
            let metadata = object["metadata"] ?? [:]
            var lines = ["Name:         \(name)"]
            if kind.namespaced { lines.append("Namespace:    \(metadata["namespace"]?.string ?? "")") }
            lines.append("Kind:         \(kind.kind) (\(kind.apiVersion))")
            lines.append("UID:          \(metadata["uid"]?.string ?? "")")
            lines.append(
                "Created:      \(metadata["creationTimestamp"]?.string ?? "") (\(Resources.age(metadata["creationTimestamp"]?.string)) ago)"
            )
            lines.append("Labels:       \(Printer.pairs(metadata["labels"]))")
            lines.append("Annotations:  \(Printer.pairs(metadata["annotations"]))")
            if let deletion = metadata["deletionTimestamp"]?.string { lines.append("Deleting:     since \(deletion)") }
            for section in ["spec", "status"] {
                guard let value = object[section] else { continue }
                lines.append("\(section.capitalized):")
                var copy = value
                if section == "status" { copy["conditions"] = nil }
                lines.append(YAML.text(copy).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
            }
            if let conditions = object["status"]?["conditions"]?.array, !conditions.isEmpty {
                lines.append("Conditions:")
                lines.append("  TYPE                 STATUS  REASON                      MESSAGE")
                for condition in conditions {
                    let type = (condition["type"]?.string ?? "").padding(toLength: 20, withPad: " ", startingAt: 0)
                    let status = (condition["status"]?.string ?? "").padding(toLength: 7, withPad: " ", startingAt: 0)
                    let reason = (condition["reason"]?.string ?? "").padding(toLength: 27, withPad: " ", startingAt: 0)
                    lines.append("  \(type) \(status) \(reason) \(condition["message"]?.string ?? "")")
                }
            }
            print(lines.joined(separator: "\n"))
        }
    }
}

/// `syncctl delete KIND NAME` or `-f FILE`.
struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete objects by kind and name, or those of a manifest file.")
    @OptionGroup var cluster: ClusterOptions
    @Argument var kind: String?
    @Argument var names: [String] = []
    @Option(name: [.short, .customLong("filename")], help: "Delete the objects of this manifest.") var file: String?

    func validate() throws {
        if file == nil && (kind == nil || names.isEmpty) { throw ValidationError("give KIND NAME… or -f FILE") }
    }

    func run() async throws {
        try await reportingFailures {
            let (client, namespace) = try cluster.connect()
            var targets: [(ResourceKind, String?, String)] = []
            if let file {
                for object in try manifests(file) {
                    let kind = try manifestKind(of: object, in: file)
                    targets.append(
                        (
                            kind, object["metadata"]?["namespace"]?.string ?? namespace,
                            object["metadata"]?["name"]?.string ?? ""
                        ))
                }
            } else if let name = self.kind {
                let kind = try ClusterAPI.Kinds.lookup(name: name).orThrow(
                    CLIError("the server doesn't have a resource type \"\(name)\""))
                targets = names.map { (kind, namespace, $0) }
            }
            for (kind, objectNamespace, name) in targets {
                _ = try await client.delete(kind, namespace: objectNamespace, name: name)
                print(
                    "\(kind.singular).\(kind.group.isEmpty ? "" : kind.group) \"\(name)\" deleted".replacingOccurrences(
                        of: ". \"", with: " \""))
            }
        }
    }
}

extension Optional {
    func orThrow(_ error: @autoclosure () -> CLIError) throws(CLIError) -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}

/// Tables and YAML/JSON output.
struct Printer {
    let kind: ResourceKind
    let format: String
    let showNamespace: Bool

    func print(_ objects: [JSONValue], list: Bool, headers: Bool = true, event: String? = nil) {
        switch format {
        case "yaml":
            let value: JSONValue =
                list ? ["apiVersion": "v1", "kind": "List", "items": .array(objects)] : (objects.first ?? .null)
            Swift.print(YAML.text(value), terminator: "")
        case "json":
            let value: JSONValue =
                list ? ["apiVersion": "v1", "kind": "List", "items": .array(objects)] : (objects.first ?? .null)
            Swift.print(value.jsonString(pretty: true))
        case "name":
            for object in objects { Swift.print("\(kind.singular)/\(object["metadata"]?["name"]?.string ?? "")") }
        default:
            if list && objects.isEmpty && headers {
                FileHandle.standardError.write(Data("No resources found.\n".utf8))
                return
            }
            var rows: [[String]] = []
            if headers { rows.append((showNamespace ? ["NAMESPACE"] : []) + ["NAME"] + kind.columns.map(\.name)) }
            for object in objects {
                var row = showNamespace ? [object["metadata"]?["namespace"]?.string ?? ""] : []
                row.append(object["metadata"]?["name"]?.string ?? "")
                for column in kind.columns {
                    let value = object[path: column.path]
                    row.append(
                        column.path.last == "creationTimestamp"
                            ? Resources.age(value?.string) : (value.map { $0.string ?? $0.jsonString() } ?? ""))
                }
                rows.append(row)
            }
            let widths = (0..<(rows.map(\.count).max() ?? 0)).map { index in
                rows.map { index < $0.count ? $0[index].count : 0 }.max() ?? 0
            }
            for row in rows {
                Swift.print(
                    row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(
                        separator: "   "
                    )
                    .trimmingCharacters(in: .whitespaces))
            }
        }
        fflush(nil)
    }

    static func pairs(_ map: JSONValue?) -> String {
        let pairs = (map?.stringMap ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return pairs.isEmpty ? "<none>" : pairs.joined(separator: ", ")
    }
}
