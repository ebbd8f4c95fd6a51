import ClusterAPI
import Foundation
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

/// Which host paths API input may make a node touch.
@Suite("Host paths: storage roots and import directories")
struct HostPathsTests {
    let root: String

    init() throws {
        root =
            FileManager.default.temporaryDirectory.appendingPathComponent("hostpaths-\(UUID().uuidString.prefix(8))")
            .path
        for directory in ["storage/images", "imports", "outside"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        for file in ["imports/guest.img", "outside/secret", "storage/images/base.img"] {
            try Data("image".utf8).write(to: URL(fileURLWithPath: "\(root)/\(file)"))
        }
        // A symlink inside the storage root that leads out of it.
        try FileManager.default.createSymbolicLink(
            atPath: "\(root)/storage/escape", withDestinationPath: "\(root)/outside")
    }

    var paths: HostPaths { HostPaths(storageRoots: ["\(root)/storage"], importDirectories: ["\(root)/imports"]) }

    @Test("paths are canonical before they are compared: no `..`, symlinks followed, pseudo-filenames are no paths")
    func resolve() {
        #expect(HostPaths.resolve("/a/./b/../c") == "/a/c")
        #expect(HostPaths.resolve("/../../etc") == "/etc")
        #expect(HostPaths.resolve("\(root)/storage/escape/secret") == "\(root)/outside/secret")
        #expect(HostPaths.resolve("json:{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}") == nil)
        #expect(HostPaths.resolve("nbd:localhost:10809") == nil)
        #expect(HostPaths.resolve("relative/path") == nil)
    }

    @Test(
        "StorageClass directories must lie under a storage root",
        arguments: [
            ("/etc", false), ("/etc/vmsync", false), ("STORAGE/images", true), ("STORAGE/images/../../outside", false),
            ("STORAGE/escape", false), ("STORAGE/new/not-yet-made", true), ("STORAGEX", false),
        ])
    func storageDirectories(directory: String, allowed: Bool) {
        let path = directory.replacingOccurrences(of: "STORAGE", with: "\(root)/storage")
        let result = Result { () throws(APIError) in try paths.storageDirectory(path, of: "local") }
        switch result {
        case .success: #expect(allowed, "\(path) accepted")
        case .failure(let error):
            #expect(!allowed, "\(path) refused: \(error)")
            #expect(error.code == 403 && error.message.contains("is not under this node's storage roots"), "\(error)")
        }
    }

    @Test(
        "file:// images only from the StorageClass's directory or an import directory; no pseudo-filenames, no traversal"
    )
    func imports() throws {
        let classDirectory = "\(root)/storage/images"
        #expect(
            try paths.importSource("file://\(root)/imports/guest.img", classDirectory: classDirectory, for: "dv")
                == "\(root)/imports/guest.img")
        #expect(
            try paths.importSource("file://\(classDirectory)/base.img", classDirectory: classDirectory, for: "dv")
                == "\(classDirectory)/base.img")
        for url in [
            "file:///etc/shadow", "file://\(root)/outside/secret", "file://\(root)/imports/../outside/secret",
            "file://\(root)/imports/%2e%2e/outside/secret",
            "file://\(root)/storage/escape/secret", "file://json:{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}",
            "file://nbd:127.0.0.1:10809",
        ] {
            let error = #expect(throws: APIError.self, "\(url)") {
                try paths.importSource(url, classDirectory: classDirectory, for: "dv")
            }
            #expect(error?.code == 403, "\(url): \(String(describing: error))")
        }
        let http = #expect(throws: APIError.self) {
            try paths.importSource("https://example.com/image", classDirectory: classDirectory, for: "dv")
        }
        #expect(http?.message.contains("is not supported here") == true)
        let directory = #expect(throws: APIError.self) {
            try paths.importSource("file://\(root)/imports", classDirectory: classDirectory, for: "dv")
        }
        #expect(directory?.message.contains("is not a regular file") == true)
    }

    @Test("kernels and initrds only from an import directory")
    func bootFiles() throws {
        #expect(try paths.bootFile("\(root)/imports/guest.img", field: "kernelPath") == "\(root)/imports/guest.img")
        for path in ["/etc/hostname", "\(root)/outside/secret", "\(root)/imports/../outside/secret"] {
            let error = #expect(throws: APIError.self) { try paths.bootFile(path, field: "kernelPath") }
            #expect(
                error?.message.contains("is not in this node's import directories") == true,
                "\(String(describing: error))")
        }
    }
}
