import CSpawn
import ClusterAPI
import ClusterClient
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Disks of DataVolumes on this node: where a volume's image lives, creating it (blank, or from an image file), and
/// removing it when its DataVolume goes. Image work runs `qemu-img` on a thread of its own.
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
        let storageClass = try await self.storageClass(named: dataVolume.storage?.storageClassName, for: "datavolume \(namespace)/\(name)")
        let size = dataVolume.storage?.requestedBytes ?? 0
        let directory = try hostPaths.storageDirectory(storageClass.directory, of: storageClass.metadata.name ?? "")
        // Names are RFC 1123 (no "/", none is "." or ".."), so the image stays in the directory; checked all the same.
        let file = (Resources.imagePath(directory: "", namespace: namespace, name: name) as NSString).lastPathComponent
        guard !"\(namespace)-\(name)".contains("/"), !file.isEmpty, !namespace.isEmpty, !name.isEmpty, !name.hasPrefix(".") else {
            throw APIError.badRequest("datavolume \(namespace)/\(name): the name cannot be an image file name")
        }
        return Disk(
            path: Resources.imagePath(directory: directory, namespace: namespace, name: name), format: "qcow2", bytes: size, shared: storageClass.shared ?? false,
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
        try? FileManager.default.createDirectory(atPath: (disk.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let partial = disk.path + ".partial"
        if let url = source?.http?.url {
            let user = "the DataVolume of \(disk.path)"
            let file = try hostPaths.importSource(url, classDirectory: (disk.path as NSString).deletingLastPathComponent, for: user)
            // Only a self-contained raw or qcow2 image: a backing or data file would be read from wherever it names.
            let info = try await Self.imageInfo(file)
            let format = info.format ?? ""
            guard ["raw", "qcow2"].contains(format) else {
                throw APIError.badRequest("\(user): data source \(url) is a \(format.isEmpty ? "unknown" : format) image; raw or qcow2 only")
            }
            if let backing = info.backingFilename ?? info.formatSpecific?.data?.dataFile {
                throw APIError.forbidden("\(user): data source \(url) refers to another file (\(backing)); only self-contained images are imported")
            }
            try await Self.qemuImg(["convert", "-f", format, "-O", disk.format, file, partial])
            if disk.bytes > 0 {
                let current = try await Self.virtualSize(partial)
                if disk.bytes > current { try await Self.qemuImg(["resize", "-f", disk.format, partial, String(disk.bytes)]) }
            }
        } else {
            guard disk.bytes > 0 else { throw APIError.badRequest("a blank DataVolume needs spec.storage.resources.requests.storage") }
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
            resolved == Resources.imagePath(directory: (resolved as NSString).deletingLastPathComponent, namespace: namespace, name: name), hostPaths.storageRoots.contains(where: { HostPaths.isWithin(resolved, $0) })
        {
            candidates.append(resolved)
        }
        if let disk = try? await disk(for: dataVolume) { candidates.append(disk.path) }
        for path in candidates {
            // Regular files only (attributesOfItem does not follow a symbolic link).
            guard (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeRegular else { continue }
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
            case format, virtualSize = "virtual-size", backingFilename = "backing-filename", formatSpecific = "format-specific"
        }
    }

    static func imageInfo(_ path: String) async throws(APIError) -> ImageInfo {
        let output = try await qemuImg(["info", "--output=json", path])
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

    /// Runs a tool on a thread of its own; a failure is an error with its output.
    @discardableResult
    static func tool(_ executable: String, _ arguments: [String]) async throws(APIError) -> String {
        let result: Result<String, APIError> = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: run(executable, arguments))
            }
        }
        return try result.get()
    }

    /// A cloud-init NoCloud seed: a small FAT image labelled CIDATA holding `user-data`, `meta-data` and, if given,
    /// `network-config` (written with mtools; no mount). Replaced atomically.
    static func cloudInitDisk(at path: String, userData: String, metaData: String, networkData: String?) async throws(APIError) {
        let work = path + ".d"
        try? FileManager.default.removeItem(atPath: work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        do {
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            try userData.write(toFile: work + "/user-data", atomically: false, encoding: .utf8)
            try metaData.write(toFile: work + "/meta-data", atomically: false, encoding: .utf8)
            if let networkData { try networkData.write(toFile: work + "/network-config", atomically: false, encoding: .utf8) }
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

    static func run(_ executable: String, _ arguments: [String]) -> Result<String, APIError> {
        var output: [Int32] = [0, 0]
        guard pipe(&output) == 0 else { return .failure(.internalError("pipe failed")) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, output[1], 2)
        posix_spawn_file_actions_addclose(&actions, output[0])
        // Nothing else of ours goes to the child: sockets are not close-on-exec (SwiftNIO's accepted ones neither), and a
        // child holding a copy would keep a connection open after we close it.
        vmsync_spawn_closefrom(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        // The agent ignores SIGTERM and SIGINT (it shuts down gracefully on them); an ignored signal stays ignored
        // across exec, so the child gets the default actions back.
        var reset = sigset_t()
        sigemptyset(&reset)
        for number in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&reset, number) }
        posix_spawnattr_setsigdefault(&attributes, &reset)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(output[1])
        guard spawned == 0 else {
            close(output[0])
            return .failure(.internalError("cannot run \(executable): \(String(cString: strerror(spawned)))"))
        }
        let text = String(decoding: FileHandle(fileDescriptor: output[0], closeOnDealloc: true).readDataToEndOfFile(), as: UTF8.self)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else {
            let name = (executable as NSString).lastPathComponent
            return .failure(.internalError("\(name) \(arguments.joined(separator: " ")): \(text.trimmingCharacters(in: .whitespacesAndNewlines))"))
        }
        return .success(text)
    }
}
