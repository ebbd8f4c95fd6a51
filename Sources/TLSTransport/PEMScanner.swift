import Foundation

/// Splits text into PEM blocks and the non-blank text between them.
enum PEMScanner {
    enum Entry: Equatable {
        /// A `-----BEGIN type-----` … `-----END type-----` block (its full text) and its 1-based position.
        case block(type: String, text: String, index: Int)
        /// Non-blank text outside any block (shortened).
        case garbage(String)
    }

    static func entries(in text: String) -> [Entry] {
        var entries: [Entry] = []
        var outside: [Substring] = []
        var current: (type: String, lines: [Substring])?
        var index = 0
        func flushOutside() {
            let joined = outside.joined(separator: " ").trimmingCharacters(in: .whitespaces)
            if !joined.isEmpty { entries.append(.garbage(String(joined.prefix(40)))) }
            outside.removeAll()
        }
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)[...]
            if var block = current {
                block.lines.append(line)
                if line.hasPrefix("-----END ") {
                    index += 1
                    entries.append(.block(type: block.type, text: block.lines.joined(separator: "\n"), index: index))
                    current = nil
                } else {
                    current = block
                }
            } else if line.hasPrefix("-----BEGIN "), line.hasSuffix("-----") {
                flushOutside()
                let type = line.dropFirst("-----BEGIN ".count).dropLast(5)
                current = (String(type), [line])
            } else if !line.isEmpty {
                outside.append(line)
            }
        }
        if let block = current {
            index += 1
            entries.append(.block(type: block.type, text: block.lines.joined(separator: "\n"), index: index))
        }
        flushOutside()
        return entries
    }
}
