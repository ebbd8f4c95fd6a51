public import Foundation
import TestSupport

/// The tiny guest's data disk: 64 MiB, the first 32 MiB a known pattern the guest never writes (the static region),
/// the guest's latest `TICK n uptime` line in the sector at 48 MiB.
public enum GuestDisk {
    /// Size of the disk.
    public static let size = 64 << 20
    /// Bytes at the start that only the host writes.
    public static let staticRegion = 32 << 20
    /// Where the guest writes its latest tick.
    public static let tickOffset = 98_304 * 512
    static let qemuImg = "/usr/bin/qemu-img"

    /// Creates the disk at `path` (qcow2 or raw) with the pattern derived from `seed`.
    public static func create(at path: String, format: String = "qcow2", seed: UInt64 = 1) async throws {
        let raw = format == "raw" ? path : path + ".raw"
        var data = pattern(seed: seed)
        data.append(Data(count: size - staticRegion))
        try data.write(to: URL(fileURLWithPath: raw))
        if format != "raw" {
            defer { try? FileManager.default.removeItem(atPath: raw) }
            try await qemuImgOrThrow(["convert", "-f", "raw", "-O", format, raw, path])
        }
    }

    /// An empty image of `bytes` (the destination of a disk copy must exist beforehand).
    public static func createBlank(at path: String, format: String = "qcow2", bytes: Int = size) async throws {
        try await qemuImgOrThrow(["create", "-q", "-f", format, path, String(bytes)])
    }

    /// The disk's guest-visible bytes, read even while a QEMU holds the image (`-U`, shared lock).
    public static func contents(of path: String) async throws -> Data {
        let raw = path + ".read-\(UUID().uuidString.prefix(6)).raw"
        defer { try? FileManager.default.removeItem(atPath: raw) }
        try await qemuImgOrThrow(["convert", "-U", "-O", "raw", path, raw])
        return try Data(contentsOf: URL(fileURLWithPath: raw))
    }

    /// The static pattern for `seed` (xorshift64*, so no two seeds share it).
    public static func pattern(seed: UInt64) -> Data {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var data = Data(count: staticRegion)
        data.withUnsafeMutableBytes { buffer in
            let words = buffer.bindMemory(to: UInt64.self)
            for index in words.indices {
                state ^= state >> 12
                state ^= state << 25
                state ^= state >> 27
                words[index] = state &* 0x2545_F491_4F6C_DD1D
            }
        }
        return data
    }

    /// The tick number the guest last wrote into `contents`, if any.
    public static func lastTick(in contents: Data) -> Int? {
        guard contents.count >= tickOffset + 512 else { return nil }
        let line = String(decoding: contents[tickOffset..<(tickOffset + 512)], as: UTF8.self)
        let fields = line.split(separator: " ")
        guard fields.count >= 2, fields[0] == "TICK" else { return nil }
        return Int(fields[1])
    }

    private static func qemuImgOrThrow(_ arguments: [String]) async throws {
        let result = try await run(qemuImg, arguments, timeout: 120)
        guard result.status == 0 else {
            throw TestBedError(
                "qemu-img \(arguments.joined(separator: " ")): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
            )
        }
    }
}
