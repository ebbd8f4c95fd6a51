/// A status condition (type, status, reason, message), as every kind's `status.conditions` holds them.
public struct Condition: Codable, Sendable, Hashable {
    /// `True`, `False` or `Unknown`.
    public enum Status: String, LenientStringEnum {
        case `true` = "True"
        case `false` = "False"
        case unknown = "Unknown"
        public static let fallback = Status.unknown

        public init(_ value: Bool?) { self = value.map { $0 ? .true : .false } ?? .unknown }
    }

    public var type: String
    public var status: Status
    public var reason: String?
    public var message: String?
    public var lastTransitionTime: String?
    public var lastProbeTime: String?
    /// Node conditions: when the agent last said so.
    public var lastHeartbeatTime: String?
    /// vmsync's `Drained` node condition: when the drain began.
    public var drainStarted: String?

    public init(_ type: String, _ status: Bool?, reason: String, message: String = "") {
        self.type = type
        self.status = Status(status)
        self.reason = reason
        self.message = message
        self.lastTransitionTime = Resources.now()
    }

    /// Whether the condition is `True`.
    public var isTrue: Bool { status == .true }
}

extension [Condition] {
    /// The condition of `type`, if present.
    public subscript(type: String) -> Condition? {
        first { $0.type == type }
    }

    /// Puts `condition` in place of the one of the same type (or appends it). Nothing changes when status, reason
    /// and message are the same (so status is written only on change); the transition time is kept when only the
    /// reason or message changed.
    public mutating func set(_ condition: Condition) {
        guard let index = firstIndex(where: { $0.type == condition.type }) else {
            append(condition)
            return
        }
        let old = self[index]
        guard old.status != condition.status || old.reason != condition.reason || old.message != condition.message
        else { return }
        var updated = condition
        if old.status == condition.status { updated.lastTransitionTime = old.lastTransitionTime }
        self[index] = updated
    }

    /// Removes the condition of `type`.
    public mutating func remove(type: String) {
        removeAll { $0.type == type }
    }
}

extension Optional where Wrapped == [Condition] {
    /// `set` on a list that may be absent.
    public mutating func set(_ condition: Condition) {
        var list = self ?? []
        list.set(condition)
        if list != (self ?? []) || self == nil { self = list }
    }

    /// The condition of `type`, if present.
    public subscript(type: String) -> Condition? { self?[type] }
}
