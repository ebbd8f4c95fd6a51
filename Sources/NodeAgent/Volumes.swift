import ClusterAPI
import ClusterClient
import Foundation
import Subprocess
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Disks of DataVolumes on this node: where a volume's image lives, creating it (blank, or from an image file), and
/// removing it when its DataVolume goes. Image work runs `qemu-img` as a child process (swift-subprocess).
struct Volumes: Sendable {
    let client: APIClient
    /// Where API input may make this node read and write.
    var hostPaths = HostPaths()

    /// A DataVolume's disk as this node sees it.
    struct Disk: Sendable {
        var path: String
        var format: String
        var bytes: UInt64
        var shared: Bool
        var storageClass: String
    }

    /// Where `dataVolume`'s image is (or goes) on this node.
    func disk(for dataVolume: DataVolume) async throws(APIError) -> Disk {
        let namespace = dataVolume.metadata.namespace ?? "default"
        let name = dataVolume.metadata.name ?? ""
        let storageClass = try await self.storageClass(
            named: dataVolume.storage?.storageClassName, for: "datavolume \(namespace)/\(name)")
        let size = dataVolume.storage?.requestedBytes ?? 0
        let directory = try hostPaths.storageDirectory(storageClass.directory, of: storageClass.metadata.name ?? "")
        // Names are RFC 1123 (no "/", none is "." or ".."), so the image stays in the directory; checked all the same.
        let file = (Resources.imagePath(directory: "", namespace: namespace, name: name) as NSString).lastPathComponent
        guard !"\(namespace)-\(name)".contains("/"), !file.isEmpty, !namespace.isEmpty, !name.isEmpty,
            !name.hasPrefix(".")
        else {
            throw APIError.badRequest("datavolume \(namespace)/\(name): the name cannot be an image file name")
        }
        return Disk(
            path: Resources.imagePath(directory: directory, namespace: namespace, name: name), format: "qcow2",
            bytes: size, shared: storageClass.shared ?? false,
            storageClass: storageClass.metadata.name ?? "")
    }

    /// The named StorageClass, or the default one.
    func storageClass(named name: String?, for user: String) async throws(APIError) -> StorageClass {
        if let name { return try await client.get(StorageClass.self, name: name) }
        let classes = try await client.list(StorageClass.self)
        guard let preferred = classes.first(where: \.isDefault) ?? (classes.count == 1 ? classes.first : nil) else {
            throw APIError.badRequest("\(user) names no storageClassName and the cluster has no default StorageClass")
        }
        return preferred
    }

    /// Creates the image if it is not there yet: blank of the requested size, or converted from the source image
    /// file (`source.http.url: file:///…`) and grown to the requested size.
    func ensure(_ disk: Disk, source: DataVolume.Source?) async throws(APIError) {
        if FileManager.default.fileExists(atPath: disk.path) { return }
        try? FileManager.default.createDirectory(
            atPath: (disk.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let partial = disk.path + ".partial"
        if let url = source?.http?.url {
            let user = "the DataVolume of \(disk.path)"
            let file = try hostPaths.importSource(
                url, classDirectory: (disk.path as NSString).deletingLastPathComponent, for: user)
            // Only a self-contained raw or qcow2 image: a backing or data file would be read from wherever it names.
            let info = try await Self.imageInfo(file)
            let format = info.format ?? ""
            guard ["raw", "qcow2"].contains(format) else {
                throw APIError.badRequest(
                    "\(user): data source \(url) is a \(format.isEmpty ? "unknown" : format) image; raw or qcow2 only")
            }
            if let backing = info.backingFilename ?? info.formatSpecific?.data?.dataFile {
                throw APIError.forbidden(
                    "\(user): data source \(url) refers to another file (\(backing)); only self-contained images are imported"
                )
            }
            try await Self.qemuImg(["convert", "-f", format, "-O", disk.format, file, partial])
            if disk.bytes > 0 {
                let current = try await Self.virtualSize(partial)
                if disk.bytes > current {
                    try await Self.qemuImg(["resize", "-f", disk.format, partial, String(disk.bytes)])
                }
            }
        } else {
            guard disk.bytes > 0 else {
                throw APIError.badRequest("a blank DataVolume needs spec.storage.resources.requests.storage")
            }
            try await Self.createEmpty(at: partial, bytes: disk.bytes)
        }
        guard rename(partial, disk.path) == 0 else { throw APIError.internalError("cannot move \(partial) into place") }
    }

    /// Removes the image of a deleted DataVolume, if this node has it (where the status says it was written, which
    /// still works when its StorageClass went first).
    func remove(_ dataVolume: DataVolume) async {
        // The status's path is written from what agents report: it is used only when it is such an image — a regular
        // file named for this DataVolume under a storage root — and never removed recursively.
        let namespace = dataVolume.metadata.namespace ?? "default"
        let name = dataVolume.metadata.name ?? ""
        var candidates: [String] = []
        if let path = dataVolume.status?.path, let resolved = HostPaths.resolve(path),
            resolved
                == Resources.imagePath(
                    directory: (resolved as NSString).deletingLastPathComponent, namespace: namespace, name: name),
            hostPaths.storageRoots.contains(where: { HostPaths.isWithin(resolved, $0) })
        {
            candidates.append(resolved)
        }
        if let disk = try? await disk(for: dataVolume) { candidates.append(disk.path) }
        for path in candidates {
            // Regular files only (attributesOfItem does not follow a symbolic link).
            guard (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeRegular
            else { continue }
            unlink(path)
        }
    }

    static func virtualSize(_ path: String) async throws(APIError) -> UInt64 {
        UInt64(clamping: try await imageInfo(path).virtualSize ?? 0)
    }

    /// What `qemu-img info` says of an image (what it cannot say reads as absent).
    struct ImageInfo: Decodable {
        var format: String?
        var virtualSize: Int64?
        var backingFilename: String?
        var formatSpecific: FormatSpecific?

        struct FormatSpecific: Decodable {
            var data: Data?

            struct Data: Decodable {
                var dataFile: String?

                enum CodingKeys: String, CodingKey { case dataFile = "data-file" }
            }
        }

        enum CodingKeys: String, CodingKey {
            case format
            case virtualSize = "virtual-size"
            case backingFilename = "backing-filename"
            case formatSpecific = "format-specific"
        }
    }

    static func imageInfo(_ path: String) async throws(APIError) -> ImageInfo {
        // -U: a running guest holds the image's lock; its metadata is still read safely (its size, its format).
        let output = try await qemuImg(["info", "-U", "--output=json", path])
        return (try? JSONDecoder().decode(ImageInfo.self, from: Foundation.Data(output.utf8))) ?? ImageInfo()
    }

    /// An empty qcow2 image (written directly; by qemu-img for sizes the direct writer does not do).
    static func createEmpty(at path: String, bytes: UInt64) async throws(APIError) {
        do {
            try QCOW2.create(at: path, virtualSize: bytes)
        } catch {
            try await qemuImg(["create", "-q", "-f", "qcow2", path, String(bytes)])
        }
    }

    /// Runs qemu-img; a failure is an error with its message.
    @discardableResult
    static func qemuImg(_ arguments: [String]) async throws(APIError) -> String {
        try await tool("/usr/bin/qemu-img", arguments)
    }

    /// Runs a tool to its end; a failure is an error with what it printed. swift-subprocess gives the child
    /// `/dev/null` for input, none of the agent's other descriptors (a socket not close-on-exec would otherwise stay
    /// open in it), an empty signal mask and default signal actions (the agent's service group ignores SIGTERM and
    /// SIGINT, and an ignored signal stays ignored across exec).
    @discardableResult
    static func tool(_ executable: String, _ arguments: [String]) async throws(APIError) -> String {
        let name = (executable as NSString).lastPathComponent
        do {
            let result = try await Subprocess.run(
                .path(FilePath(executable)), arguments: Arguments(arguments),
                output: .string(limit: Self.toolOutputLimit),
                error: .string(limit: Self.toolOutputLimit))
            guard result.terminationStatus.isSuccess else {
                let printed = [result.standardError, result.standardOutput].compactMap { $0 }.joined(separator: "\n")
                throw APIError.internalError(
                    "\(name) \(arguments.joined(separator: " ")): \(printed.trimmingCharacters(in: .whitespacesAndNewlines))"
                )
            }
            return result.standardOutput
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.internalError("cannot run \(executable): \(error)")
        }
    }

    /// The most a tool may print on each of its outputs (qemu-img's JSON about an image is a few KiB).
    static let toolOutputLimit = 1 << 20

    /// A cloud-init NoCloud seed: a small FAT image labelled CIDATA holding `user-data`, `meta-data` and, if given,
    /// `network-config` (written with mtools; no mount). Replaced atomically.
    static func cloudInitDisk(at path: String, userData: String, metaData: String, networkData: String?)
        async throws(APIError)
    {
        let work = path + ".d"
        try? FileManager.default.removeItem(atPath: work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            try userData.write(toFile: work + "/user-data", atomically: false, encoding: .utf8)
            try metaData.write(toFile: work + "/meta-data", atomically: false, encoding: .utf8)
            if let networkData {
                try networkData.write(toFile: work + "/network-config", atomically: false, encoding: .utf8)
            }
        } catch {
            throw APIError.internalError("cannot write the cloud-init files in \(work): \(error.localizedDescription)")
        }
        let partial = path + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        try await tool("/usr/bin/mformat", ["-C", "-f", "1440", "-v", "CIDATA", "-i", partial, "::"])
        let files = ["user-data", "meta-data"] + (networkData == nil ? [] : ["network-config"])
        try await tool("/usr/bin/mcopy", ["-i", partial] + files.map { work + "/" + $0 } + ["::/"])
        guard rename(partial, path) == 0 else { throw APIError.internalError("cannot move \(partial) into place") }
    }

}
