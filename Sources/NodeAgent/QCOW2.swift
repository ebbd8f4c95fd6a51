import Foundation

/// Empty qcow2 images, written directly: the layout `qemu-img create -f qcow2` writes (version 3, 64 KiB clusters,
/// 16-bit refcounts; header, refcount table, refcount block and L1 table in the first four clusters), without
/// starting a process — a migration target creates its incoming disks on the critical path.
enum QCOW2 {
    static let clusterSize = 65_536

    /// The image bytes for an empty disk of `virtualSize` bytes (nil when it needs more than one L1 cluster, > 4 TiB).
    static func emptyImage(virtualSize: UInt64) -> Data? {
        let perL2 = UInt64(clusterSize) * UInt64(clusterSize / 8)
        let l1Entries = max(1, (virtualSize + perL2 - 1) / perL2)
        guard l1Entries * 8 <= UInt64(clusterSize) else { return nil }
        var data = Data(count: 3 * clusterSize + Int(l1Entries) * 8)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.bigEndian) {
                data.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: $0)
            }
        }
        put(UInt32(0x5146_49fb), at: 0)  // "QFI\xfb"
        put(UInt32(3), at: 4)  // version
        put(UInt32(16), at: 20)  // cluster_bits
        put(virtualSize, at: 24)
        put(UInt32(l1Entries), at: 36)  // l1_size
        put(UInt64(3 * clusterSize), at: 40)  // l1_table_offset
        put(UInt64(clusterSize), at: 48)  // refcount_table_offset
        put(UInt32(1), at: 56)  // refcount_table_clusters
        put(UInt32(4), at: 96)  // refcount_order: 16-bit refcounts
        put(UInt32(112), at: 100)  // header_length (with the compression type byte and padding); no extensions
        put(UInt64(2 * clusterSize), at: clusterSize)  // refcount table → the refcount block
        for cluster in 0..<4 { put(UInt16(1), at: 2 * clusterSize + cluster * 2) }  // header, table, block, L1
        return data
    }

    /// Writes an empty image of `virtualSize` bytes at `path` (replacing nothing: the file must not exist).
    static func create(at path: String, virtualSize: UInt64) throws {
        guard let image = emptyImage(virtualSize: virtualSize) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        try image.write(to: URL(fileURLWithPath: path), options: .withoutOverwriting)
    }
}
