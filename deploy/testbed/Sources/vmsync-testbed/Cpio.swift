import Foundation

/// Writes a cpio archive in the "newc" format the kernel unpacks as an initramfs (no cpio tool needed).
struct CpioArchive {
    private(set) var data = Data()
    private var inode: UInt32 = 1

    mutating func directory(_ path: String) {
        append(path: path, mode: 0o040755, contents: Data())
    }

    mutating func file(_ path: String, contents: Data, executable: Bool = false) {
        append(path: path, mode: executable ? 0o100755 : 0o100644, contents: contents)
    }

    /// A character device node (e.g. /dev/console 5:1, needed before devtmpfs is mounted).
    mutating func characterDevice(_ path: String, major: UInt32, minor: UInt32) {
        append(path: path, mode: 0o020600, contents: Data(), device: (major, minor))
    }

    /// Closes the archive with the trailer entry.
    mutating func finish() -> Data {
        append(path: "TRAILER!!!", mode: 0, contents: Data(), links: 1)
        return data
    }

    private mutating func append(
        path: String, mode: UInt32, contents: Data, device: (UInt32, UInt32) = (0, 0), links: UInt32? = nil
    ) {
        let name = Array(path.utf8) + [0]
        let fields: [UInt32] = [
            inode, mode, 0, 0, links ?? (mode & 0o040000 != 0 ? 2 : 1), 0, UInt32(contents.count),
            0, 0, device.0, device.1, UInt32(name.count), 0,
        ]
        inode += 1
        var header = "070701"
        for field in fields { header += String(format: "%08X", field) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: name)
        pad()
        data.append(contents)
        pad()
    }

    private mutating func pad() {
        while data.count % 4 != 0 { data.append(0) }
    }
}
