import Foundation

/// The shape a resource body must have. Validation is strict: a member the schema does not name is an error
/// (`unknown field`), as `kubectl --validate=strict` would report it, so a typo never silently does nothing.
public indirect enum Schema: Sendable {
    /// An object with the named members (`required` must be present); `additional` allows any other member with
    /// that schema (maps such as labels).
    case object([String: Schema], required: Set<String> = [], additional: Schema? = nil)
    /// An array of elements.
    case array(Schema)
    /// A string, optionally one of `allowed`.
    case string(allowed: [String]? = nil)
    /// An integer, optionally at least `minimum`.
    case integer(minimum: Int64? = nil)
    /// A number.
    case number
    /// A boolean.
    case boolean
    /// A Kubernetes quantity: a number or a string such as "128Mi", "10Gi", "500m".
    case quantity
    /// Anything (free-form parts such as affinity rules or status written by the system).
    case any

    /// An object whose members are all optional.
    static func fields(_ members: [String: Schema]) -> Schema { .object(members) }
    /// A map of strings (labels, annotations, node selectors).
    static let stringMap = Schema.object([:], additional: .string())
    /// An empty object used as a marker (`blank: {}`, `masquerade: {}`).
    static let marker = Schema.object([:])

    /// Checks `value` at `path`; returns every problem found.
    public func validate(_ value: JSONValue, at path: String) -> [FieldError] {
        switch self {
        case .any:
            return []
        case .object(let members, let required, let additional):
            guard case .object(let object) = value else { return [typeError(path, "object", value)] }
            var errors: [FieldError] = []
            for name in required.sorted() where object[name] == nil || object[name] == .null {
                errors.append(FieldError(field: join(path, name), reason: .required, message: "Required value"))
            }
            for (name, member) in object.sorted(by: { $0.key < $1.key }) {
                if member == .null { continue }  // null means "unset", as Kubernetes treats it
                if let schema = members[name] ?? additional {
                    errors += schema.validate(member, at: join(path, name))
                } else {
                    errors.append(FieldError(field: join(path, name), reason: .unknown, message: "unknown field \"\(join(path, name))\""))
                }
            }
            return errors
        case .array(let element):
            guard case .array(let elements) = value else { return [typeError(path, "array", value)] }
            return elements.enumerated().flatMap { element.validate($1, at: "\(path)[\($0)]") }
        case .string(let allowed):
            guard case .string(let text) = value else { return [typeError(path, "string", value)] }
            if let allowed, !allowed.contains(text) {
                let list = allowed.map { "\"\($0)\"" }.joined(separator: ", ")
                return [FieldError(field: path, reason: .notSupported, message: "Unsupported value: \"\(text)\": supported values: \(list)")]
            }
            return []
        case .integer(let minimum):
            guard let number = value.int, value.typeName != "string" else { return [typeError(path, "integer", value)] }
            if let minimum, number < minimum {
                return [FieldError(field: path, reason: .invalid, message: "Invalid value: \(number): must be at least \(minimum)")]
            }
            return []
        case .number:
            switch value {
            case .int, .double: return []
            default: return [typeError(path, "number", value)]
            }
        case .boolean:
            guard case .bool = value else { return [typeError(path, "boolean", value)] }
            return []
        case .quantity:
            switch value {
            case .int, .double: return []
            case .string(let text):
                return Quantity(text) == nil
                    ? [FieldError(field: path, reason: .invalid, message: "Invalid value: \"\(text)\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
                    : []
            default: return [typeError(path, "quantity", value)]
            }
        }
    }

    private func typeError(_ path: String, _ expected: String, _ value: JSONValue) -> FieldError {
        FieldError(field: path, reason: .typeInvalid, message: "Invalid value: \"\(value.typeName)\": \(path) in body must be of type \(expected): \(value.jsonString())")
    }

    private func join(_ path: String, _ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
}

/// A Kubernetes quantity ("128Mi", "2Gi", "1.5", "500m") as a number of base units.
public struct Quantity: Sendable, Hashable {
    /// The value in base units (bytes for memory, cores for CPU).
    public var value: Double

    /// Parses a quantity string; nil if it is not one.
    public init?(_ text: String) {
        let suffixes: [(String, Double)] = [
            ("Ki", 1024), ("Mi", Double(1 << 20)), ("Gi", Double(1 << 30)), ("Ti", Double(1 << 40)), ("Pi", Double(1 << 50)),
            ("Ei", Double(1 << 60)), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
            ("m", 1e-3), ("u", 1e-6), ("n", 1e-9),
        ]
        var number = Substring(text.trimmingCharacters(in: .whitespaces))
        var factor = 1.0
        if let (suffix, multiplier) = suffixes.first(where: { number.hasSuffix($0.0) }) {
            number = number.dropLast(suffix.count)
            factor = multiplier
        }
        guard !number.isEmpty, let base = Double(number), base.isFinite else { return nil }
        value = base * factor
    }

    /// From a JSON value (number or quantity string).
    public init?(_ json: JSONValue?) {
        switch json {
        case .int(let number): value = Double(number)
        case .double(let number): value = number
        case .string(let text):
            guard let parsed = Quantity(text) else { return nil }
            self = parsed
        default: return nil
        }
    }

    /// Whole bytes (rounded up).
    public var bytes: UInt64 { UInt64(max(0, value.rounded(.up))) }
}
