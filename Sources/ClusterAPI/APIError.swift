/// The one error type of the cluster API: what the server answers as a Kubernetes `Status`, what the client reports,
/// what the CLI prints as one line.
public struct APIError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Kubernetes' `StatusReason`s vmsync uses.
    public enum Reason: String, Sendable, Hashable {
        case badRequest = "BadRequest"
        case unauthorized = "Unauthorized"
        case forbidden = "Forbidden"
        case notFound = "NotFound"
        case alreadyExists = "AlreadyExists"
        case conflict = "Conflict"
        case gone = "Gone"
        case invalid = "Invalid"
        case methodNotAllowed = "MethodNotAllowed"
        case unsupportedMediaType = "UnsupportedMediaType"
        case requestEntityTooLarge = "RequestEntityTooLarge"
        case internalError = "InternalError"
        case serviceUnavailable = "ServiceUnavailable"
        case timeout = "Timeout"
    }

    /// Why.
    public var reason: Reason
    /// HTTP status code.
    public var code: Int
    /// A sentence naming the field or the cause.
    public var message: String
    /// The object the error is about, when there is one (Status `details`).
    public var details: Details?

    /// Status `details`: which object, and per-field causes.
    public struct Details: Hashable, Sendable {
        public var name: String?
        public var group: String?
        public var kind: String?
        public var causes: [FieldError]

        public init(name: String? = nil, group: String? = nil, kind: String? = nil, causes: [FieldError] = []) {
            self.name = name
            self.group = group
            self.kind = kind
            self.causes = causes
        }
    }

    public init(_ reason: Reason, code: Int, _ message: String, details: Details? = nil) {
        self.reason = reason
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(reason.rawValue): \(message)" }

    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, code: 400, message) }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: 404, message) }
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: 403, message) }
    public static func conflict(_ message: String) -> APIError { APIError(.conflict, code: 409, message) }
    public static func alreadyExists(_ message: String) -> APIError { APIError(.alreadyExists, code: 409, message) }
    public static func gone(_ message: String) -> APIError { APIError(.gone, code: 410, message) }
    public static func internalError(_ message: String) -> APIError { APIError(.internalError, code: 500, message) }

    /// The `Status` object the API answers with.
    public var status: JSONValue {
        var status: JSONValue = [
            "apiVersion": "v1", "kind": "Status", "metadata": [:], "status": "Failure",
            "reason": .string(reason.rawValue), "message": .string(message), "code": .int(Int64(code)),
        ]
        if let details {
            var object: JSONValue = [:]
            if let name = details.name { object["name"] = .string(name) }
            if let group = details.group { object["group"] = .string(group) }
            if let kind = details.kind { object["kind"] = .string(kind) }
            if !details.causes.isEmpty {
                object["causes"] = .array(
                    details.causes.map {
                        [
                            "reason": .string($0.reason.rawValue), "message": .string($0.message),
                            "field": .string($0.field),
                        ]
                    })
            }
            status["details"] = object
        }
        return status
    }

    /// Reads a `Status` the server sent.
    public init?(status: JSONValue) {
        guard status["kind"]?.string == "Status", status["status"]?.string == "Failure" else { return nil }
        let reason = status["reason"]?.string.flatMap(Reason.init(rawValue:)) ?? .internalError
        self.init(reason, code: Int(status["code"]?.int ?? 500), status["message"]?.string ?? "unknown error")
        if let details = status["details"] {
            let causes = (details["causes"]?.array ?? []).map {
                FieldError(
                    field: $0["field"]?.string ?? "",
                    reason: FieldError.Reason(rawValue: $0["reason"]?.string ?? "") ?? .invalid,
                    message: $0["message"]?.string ?? "")
            }
            self.details = Details(
                name: details["name"]?.string, group: details["group"]?.string, kind: details["kind"]?.string,
                causes: causes)
        }
    }
}

/// One reason a body is invalid, at a field path such as `spec.template.spec.domain.cpu.cores`.
public struct FieldError: Hashable, Sendable, CustomStringConvertible {
    /// Kubernetes' `CauseType`s.
    public enum Reason: String, Sendable, Hashable {
        case required = "FieldValueRequired"
        case invalid = "FieldValueInvalid"
        case notSupported = "FieldValueNotSupported"
        case typeInvalid = "FieldValueTypeInvalid"
        case unknown = "FieldValueUnknown"
        case forbidden = "FieldValueForbidden"
    }

    public var field: String
    public var reason: Reason
    public var message: String

    public init(field: String, reason: Reason, message: String) {
        self.field = field
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

extension JSONValue: ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByStringLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral
{
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
