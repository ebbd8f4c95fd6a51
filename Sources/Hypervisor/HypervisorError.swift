internal import CLibvirt

/// The one error type of Hypervisor: a switchable code and a message naming the operation, the domain and the
/// connection, e.g. `domainNotFound: lookup of domain "vm-7" on test:///default: …`.
public struct HypervisorError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Hashable, Sendable {
        /// The connection could not be opened or was lost.
        case connectionFailed
        /// No such domain.
        case domainNotFound
        /// The domain spec is not valid (checked before libvirt sees it).
        case invalidSpec
        /// libvirt refused the domain XML or its configuration.
        case invalidConfiguration
        /// The operation does not apply in the domain's current state.
        case operationInvalid
        /// The operation was aborted (e.g. a migration job cancelled).
        case operationAborted
        /// The operation timed out.
        case timeout
        /// The driver does not support the operation.
        case unsupported
        /// Anything else libvirt reported.
        case libvirt
    }

    /// The switchable code.
    public var code: Code
    /// A sentence naming the operation and its subject.
    public var message: String
    /// libvirt's own error number, when the error came from libvirt.
    public var libvirtCode: Int32?

    /// Creates an error.
    public init(_ code: Code, _ message: String, libvirtCode: Int32? = nil) {
        self.code = code
        self.message = message
        self.libvirtCode = libvirtCode
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The calling thread's last libvirt error, described for `operation` (e.g. `start of domain "vm1" on URI`).
    /// Must run on the thread that made the failing call: libvirt keeps the last error per thread.
    static func last(_ operation: String) -> HypervisorError {
        guard let error = virGetLastError() else {
            return HypervisorError(.libvirt, "\(operation) failed without a libvirt error")
        }
        let number = error.pointee.code
        let text = error.pointee.message.map { String(cString: $0) } ?? "unknown libvirt error \(number)"
        virResetLastError()
        return HypervisorError(code(for: number), "\(operation): \(text)", libvirtCode: number)
    }

    private static func code(for number: Int32) -> Code {
        switch UInt32(bitPattern: number) {
        case VIR_ERR_NO_CONNECT.rawValue, VIR_ERR_AUTH_FAILED.rawValue, VIR_ERR_RPC.rawValue:
            .connectionFailed
        case VIR_ERR_NO_DOMAIN.rawValue:
            .domainNotFound
        case VIR_ERR_XML_ERROR.rawValue, VIR_ERR_XML_DETAIL.rawValue, VIR_ERR_CONFIG_UNSUPPORTED.rawValue,
            VIR_ERR_INVALID_ARG.rawValue:
            .invalidConfiguration
        case VIR_ERR_OPERATION_INVALID.rawValue:
            .operationInvalid
        case VIR_ERR_OPERATION_ABORTED.rawValue:
            .operationAborted
        case VIR_ERR_OPERATION_TIMEOUT.rawValue, VIR_ERR_AGENT_UNRESPONSIVE.rawValue:
            .timeout
        case VIR_ERR_NO_SUPPORT.rawValue, VIR_ERR_OPERATION_UNSUPPORTED.rawValue:
            .unsupported
        default:
            .libvirt
        }
    }
}
