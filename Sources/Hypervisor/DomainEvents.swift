internal import CLibvirt
import Dispatch
import Synchronization

/// A domain lifecycle event: defined, started, stopped, … with libvirt's detail code.
public struct DomainLifecycleEvent: Sendable, Hashable, CustomStringConvertible {
    /// What happened.
    public enum Kind: Sendable, Hashable {
        case defined, undefined, started, suspended, resumed, stopped, shutdown, suspendedToMemory, crashed
        case unknown(Int32)

        init(libvirt value: Int32) {
            switch UInt32(bitPattern: value) {
            case VIR_DOMAIN_EVENT_DEFINED.rawValue: self = .defined
            case VIR_DOMAIN_EVENT_UNDEFINED.rawValue: self = .undefined
            case VIR_DOMAIN_EVENT_STARTED.rawValue: self = .started
            case VIR_DOMAIN_EVENT_SUSPENDED.rawValue: self = .suspended
            case VIR_DOMAIN_EVENT_RESUMED.rawValue: self = .resumed
            case VIR_DOMAIN_EVENT_STOPPED.rawValue: self = .stopped
            case VIR_DOMAIN_EVENT_SHUTDOWN.rawValue: self = .shutdown
            case VIR_DOMAIN_EVENT_PMSUSPENDED.rawValue: self = .suspendedToMemory
            case VIR_DOMAIN_EVENT_CRASHED.rawValue: self = .crashed
            default: self = .unknown(value)
            }
        }
    }

    /// The domain's name.
    public var domain: String
    /// What happened.
    public var kind: Kind
    /// libvirt's detail code for the kind (e.g. STOPPED_MIGRATED = 3).
    public var detail: Int32

    /// Whether the event is part of a migration: incoming start, the source stopping after it migrated, or the
    /// pause/resume around switchover.
    public var isMigration: Bool {
        switch kind {
        case .started: UInt32(bitPattern: detail) == VIR_DOMAIN_EVENT_STARTED_MIGRATED.rawValue
        case .suspended: UInt32(bitPattern: detail) == VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED.rawValue
        case .resumed: UInt32(bitPattern: detail) == VIR_DOMAIN_EVENT_RESUMED_MIGRATED.rawValue
        case .stopped: UInt32(bitPattern: detail) == VIR_DOMAIN_EVENT_STOPPED_MIGRATED.rawValue
        default: false
        }
    }

    public var description: String { "\(domain): \(kind) (detail \(detail))" }
}

/// Receives libvirt's callbacks on the event-loop thread and hands them to an AsyncStream.
final class LifecycleEventSink: Sendable {
    let continuation: AsyncStream<DomainLifecycleEvent>.Continuation

    init(continuation: AsyncStream<DomainLifecycleEvent>.Continuation) {
        self.continuation = continuation
    }
}

/// The C callback for VIR_DOMAIN_EVENT_ID_LIFECYCLE; it runs on libvirt's event-loop thread.
private let lifecycleCallback:
    @convention(c) (
        OpaquePointer?, OpaquePointer?, Int32, Int32, UnsafeMutableRawPointer?
    ) -> Int32 = { _, domain, event, detail, opaque in
        guard let domain, let opaque else { return 0 }
        let sink = Unmanaged<LifecycleEventSink>.fromOpaque(opaque).takeUnretainedValue()
        let name = virDomainGetName(domain).map { String(cString: $0) } ?? ""
        sink.continuation.yield(DomainLifecycleEvent(domain: name, kind: .init(libvirt: event), detail: detail))
        return 0
    }

/// Ends the stream and releases the sink when libvirt drops the registration (deregistered, or connection closed).
private let releaseSink: @convention(c) (UnsafeMutableRawPointer?) -> Void = { opaque in
    guard let opaque else { return }
    let sink = Unmanaged<LifecycleEventSink>.fromOpaque(opaque)
    sink.takeUnretainedValue().continuation.finish()
    sink.release()
}

extension Connection {
    /// Lifecycle events of every domain on this connection, from now on, until the stream is dropped or the
    /// connection closes (the stream then ends). Events arrive in the order libvirt emits them.
    public func lifecycleEvents() async throws(HypervisorError) -> AsyncStream<DomainLifecycleEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: DomainLifecycleEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let sink = LifecycleEventSink(continuation: continuation)
        let identifier = try await run("registration for lifecycle events on \(uri)") {
            pointer throws(HypervisorError) -> Int32 in
            let opaque = Unmanaged.passRetained(sink).toOpaque()
            let callback = unsafeBitCast(lifecycleCallback, to: virConnectDomainEventGenericCallback.self)
            let identifier = virConnectDomainEventRegisterAny(
                pointer, nil, Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue), callback, opaque, releaseSink)
            guard identifier >= 0 else {
                Unmanaged<LifecycleEventSink>.fromOpaque(opaque).release()
                throw HypervisorError.last("registration for lifecycle events on \(self.uri)")
            }
            return identifier
        }
        eventRegistrations.withLock { _ = $0.insert(identifier) }
        continuation.onTermination = { _ in
            // Deregistering may block on the daemon; never do it on the caller's thread.
            DispatchQueue.global().async {
                let registered = self.eventRegistrations.withLock { $0.remove(identifier) != nil }
                guard registered else { return }
                _ = try? self.runSynchronously { pointer in virConnectDomainEventDeregisterAny(pointer, identifier) }
            }
        }
        return stream
    }
}
