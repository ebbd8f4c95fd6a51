import Foundation

/// A label selector (`app=web,tier!=db,env in (a,b),!legacy,owner`) as Kubernetes parses it.
public struct LabelSelector: Sendable, Hashable, CustomStringConvertible {
    enum Requirement: Sendable, Hashable {
        case equals(String, String)
        case notEquals(String, String)
        case isIn(String, Set<String>)
        case notIn(String, Set<String>)
        case exists(String)
        case doesNotExist(String)
    }

    let requirements: [Requirement]
    public let description: String

    /// Parses a selector; an empty text selects everything.
    public init(_ text: String) throws(APIError) {
        description = text
        var requirements: [Requirement] = []
        for part in Self.split(text) {
            let term = part.trimmingSpaces
            if term.isEmpty { continue }
            if let range = term.range(of: " notin ") ?? term.range(of: " in ") {
                let key = String(term[..<range.lowerBound]).trimmingSpaces
                let list = String(term[range.upperBound...]).trimmingSpaces
                guard list.hasPrefix("("), list.hasSuffix(")"), !key.isEmpty else {
                    throw APIError.badRequest(
                        "invalid label selector \"\(text)\": \"\(term)\" needs a key and a (list)")
                }
                let values = Set(list.dropFirst().dropLast().split(separator: ",").map { String($0).trimmingSpaces })
                requirements.append(term[range].contains("notin") ? .notIn(key, values) : .isIn(key, values))
            } else if let range = term.range(of: "!=") {
                requirements.append(
                    .notEquals(
                        String(term[..<range.lowerBound]).trimmingSpaces,
                        String(term[range.upperBound...]).trimmingSpaces))
            } else if let range = term.range(of: "==") ?? term.range(of: "=") {
                requirements.append(
                    .equals(
                        String(term[..<range.lowerBound]).trimmingSpaces,
                        String(term[range.upperBound...]).trimmingSpaces))
            } else if term.hasPrefix("!") {
                requirements.append(.doesNotExist(String(term.dropFirst()).trimmingSpaces))
            } else {
                requirements.append(.exists(term))
            }
        }
        for requirement in requirements {
            switch requirement {
            case .equals(let key, _), .notEquals(let key, _), .isIn(let key, _), .notIn(let key, _), .exists(let key),
                .doesNotExist(let key):
                if key.isEmpty || key.contains(" ") {
                    throw APIError.badRequest("invalid label selector \"\(text)\": bad key \"\(key)\"")
                }
            }
        }
        self.requirements = requirements
    }

    /// Whether `labels` satisfy every requirement.
    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { requirement in
            switch requirement {
            case .equals(let key, let value): labels[key] == value
            case .notEquals(let key, let value): labels[key] != value
            case .isIn(let key, let values): labels[key].map(values.contains) ?? false
            case .notIn(let key, let values): !(labels[key].map(values.contains) ?? false)
            case .exists(let key): labels[key] != nil
            case .doesNotExist(let key): labels[key] == nil
            }
        }
    }

    /// Splits at commas outside parentheses.
    private static func split(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var depth = 0
        for character in text {
            if character == "(" { depth += 1 }
            if character == ")" { depth -= 1 }
            if character == ",", depth == 0 {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        return parts
    }
}

/// A field selector: `path=value` or `path!=value` terms over dotted paths (`metadata.name`, `status.nodeName`).
public struct FieldSelector: Sendable, Hashable, CustomStringConvertible {
    let terms: [(path: [String], value: String, equal: Bool)]
    public let description: String

    public static func == (lhs: FieldSelector, rhs: FieldSelector) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }

    /// Parses a selector; an empty text selects everything.
    public init(_ text: String) throws(APIError) {
        description = text
        var terms: [(path: [String], value: String, equal: Bool)] = []
        for part in text.split(separator: ",") {
            let term = String(part).trimmingSpaces
            let equal = !term.contains("!=")
            let pieces = term.components(separatedBy: equal ? (term.contains("==") ? "==" : "=") : "!=")
            guard pieces.count == 2, !pieces[0].isEmpty else {
                throw APIError.badRequest("invalid field selector \"\(text)\": \"\(term)\" is not path=value")
            }
            terms.append(
                (pieces[0].trimmingSpaces.split(separator: ".").map(String.init), pieces[1].trimmingSpaces, equal))
        }
        self.terms = terms
    }

    /// Whether `object` satisfies every term (a missing field counts as "").
    public func matches(_ object: JSONValue) -> Bool {
        terms.allSatisfy { term in
            let actual = object[path: term.path].map { $0.string ?? $0.jsonString() } ?? ""
            return (actual == term.value) == term.equal
        }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
