public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writing files that hold secrets (private keys, kubeconfigs with keys in them): the bytes go into a new file that
/// is created with its final mode — never readable by others for a moment, whatever the umask — synced, then renamed
/// over the target, so a reader sees the old file or the whole new one. Every failure is an error naming the file.
public enum SecretFile {
    /// Writes `data` to `path` with `mode` (0600 for secrets).
    public static func write(_ data: Data, to path: String, mode: mode_t = 0o600) throws(TransportError) {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary =
            (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw failure(path, errno) }
        var written = 0
        var problem: Int32 = 0
        // The umask may have narrowed the mode; set it exactly, before any byte is written.
        if fchmod(descriptor, mode) != 0 { problem = errno }
        data.withUnsafeBytes { buffer in
            while problem == 0, written < buffer.count {
                let count = Glibc.write(descriptor, buffer.baseAddress! + written, buffer.count - written)
                if count < 0 {
                    if errno == EINTR { continue }
                    problem = errno
                } else {
                    written += count
                }
            }
        }
        if problem == 0, fsync(descriptor) != 0 { problem = errno }
        close(descriptor)
        if problem == 0, rename(temporary, path) != 0 { problem = errno }
        if problem != 0 {
            unlink(temporary)
            throw failure(path, problem)
        }
    }

    private static func failure(_ path: String, _ code: Int32) -> TransportError {
        TransportError(.fileSystem, "cannot write \(path): \(String(cString: strerror(code)))")
    }
}
