import ClusterAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Which host paths API input may make this node touch. The agent runs as root, so a path in a manifest is a
/// privilege: StorageClass directories must lie under a storage root, an image imported from `file://` must come
/// from its volume's StorageClass directory or an import directory, and a kernel or initrd to boot from an import
/// directory. Paths are compared after `..` and symlinks are resolved, so neither leads out.
public struct HostPaths: Sendable {
    /// Directories StorageClass directories must lie under.
    public var storageRoots: [String]
    /// Directories images (`file://` sources), kernels and initrds may be taken from.
    public var importDirectories: [String]

    /// The default: StorageClass directories under /var/lib/vmsync, imports only from a volume's own class directory.
    public static let defaultStorageRoots = ["/var/lib/vmsync"]

    public init(storageRoots: [String] = HostPaths.defaultStorageRoots, importDirectories: [String] = []) {
        self.storageRoots = storageRoots
        self.importDirectories = importDirectories
    }

    /// `path` made canonical: absolute, without `.` or `..`, with the symlinks of its existing part followed. Nil when
    /// it is not an absolute path (a `json:` or `nbd:` pseudo-filename, a relative path).
    static func resolve(_ path: String) -> String? {
        guard path.hasPrefix("/"), !path.contains("\0") else { return nil }
        var parts: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(String(part))
            }
        }
        // Follow symlinks in the longest prefix that exists; the rest is appended as written.
        var existing = parts
        var rest: [String] = []
        while !existing.isEmpty, !FileManager.default.fileExists(atPath: "/" + existing.joined(separator: "/")) {
            rest.insert(existing.removeLast(), at: 0)
        }
        guard let real = realpath("/" + existing.joined(separator: "/"), nil) else { return nil }
        defer { free(real) }
        let base = String(cString: real)
        return rest.isEmpty ? base : (base == "/" ? "" : base) + "/" + rest.joined(separator: "/")
    }

    /// Whether canonical `path` is `root` or lies beneath it.
    static func isWithin(_ path: String, _ root: String) -> Bool {
        guard let root = resolve(root) else { return false }
        return path == root || path.hasPrefix(root == "/" ? "/" : root + "/")
    }

    /// A StorageClass's directory, canonical, if it lies under a storage root.
    func storageDirectory(_ directory: String?, of storageClass: String) throws(APIError) -> String {
        guard let directory, !directory.isEmpty else {
            throw APIError.badRequest("storageclass \"\(storageClass)\" has no directory")
        }
        guard let resolved = Self.resolve(directory), storageRoots.contains(where: { Self.isWithin(resolved, $0) })
        else {
            throw APIError.forbidden(
                "storageclass \"\(storageClass)\": directory \(directory) is not under this node's storage roots (\(storageRoots.joined(separator: ", ")))"
            )
        }
        return resolved
    }

    /// The file a `file://` image source names, canonical, if it lies in `classDirectory` or an import directory.
    func importSource(_ url: String, classDirectory: String, for user: String) throws(APIError) -> String {
        guard url.hasPrefix("file://") else {
            throw APIError.badRequest("\(user): data source \(url) is not supported here; use file:///path/to/image")
        }
        let raw = String(url.dropFirst("file://".count))
        let path = raw.removingPercentEncoding ?? raw
        guard let resolved = Self.resolve(path) else {
            throw APIError.forbidden(
                "\(user): data source \(url) does not name an absolute file path (pseudo-filenames such as json: or nbd: are refused)"
            )
        }
        let allowed = [classDirectory] + importDirectories
        guard allowed.contains(where: { Self.isWithin(resolved, $0) }) else {
            throw APIError.forbidden(
                "\(user): data source \(url) is outside the StorageClass directory and this node's import directories (\(allowed.joined(separator: ", ")))"
            )
        }
        var status = stat()
        guard stat(resolved, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw APIError.badRequest("\(user): data source \(url) is not a regular file on this node")
        }
        return resolved
    }

    /// A kernel or initrd to boot, canonical, if it is a regular file in an import directory.
    func bootFile(_ path: String, field: String) throws(APIError) -> String {
        guard let resolved = Self.resolve(path), importDirectories.contains(where: { Self.isWithin(resolved, $0) })
        else {
            throw APIError.forbidden(
                "\(field): \(path) is not in this node's import directories (\(importDirectories.isEmpty ? "none configured" : importDirectories.joined(separator: ", ")))"
            )
        }
        var status = stat()
        guard stat(resolved, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw APIError.badRequest("\(field): \(path) is not a regular file on this node")
        }
        return resolved
    }
}
