internal import CLibvirt

#if canImport(Glibc)
    import Glibc
#endif

/// libvirt's typed parameter lists (`virTypedParameter`), built for calls and read from results.
enum TypedParameters {
    /// Builds a list from (name, value) pairs; the caller frees it with `free(_:count:)`. A repeated name (e.g.
    /// `migrate_disks`) becomes repeated entries, as libvirt expects for list-valued parameters.
    static func make(
        _ entries: [(name: String, value: MigrationOptions.TypedValue)], operation: String
    ) throws(HypervisorError) -> (pointer: virTypedParameterPtr?, count: Int32) {
        var pointer: virTypedParameterPtr?
        var count: Int32 = 0
        var capacity: Int32 = 0
        for entry in entries {
            let result: Int32
            switch entry.value {
            case .string(let text): result = virTypedParamsAddString(&pointer, &count, &capacity, entry.name, text)
            case .unsigned(let number):
                result = virTypedParamsAddULLong(&pointer, &count, &capacity, entry.name, number)
            case .int(let number): result = virTypedParamsAddInt(&pointer, &count, &capacity, entry.name, number)
            }
            if result < 0 {
                let error = HypervisorError.last("\(operation): parameter \(entry.name)")
                virTypedParamsFree(pointer, count)
                throw error
            }
        }
        return (pointer, count)
    }

    /// The numeric entries of a list (integers as they are, booleans as 0/1, doubles truncated).
    static func numbers(_ pointer: virTypedParameterPtr?, count: Int32) -> [String: UInt64] {
        guard let pointer else { return [:] }
        var result: [String: UInt64] = [:]
        for index in 0..<Int(count) {
            var parameter = pointer[index]
            let name = withUnsafeBytes(of: &parameter.field) { buffer in
                String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            switch UInt32(bitPattern: parameter.type) {
            case VIR_TYPED_PARAM_ULLONG.rawValue: result[name] = parameter.value.ul
            case VIR_TYPED_PARAM_LLONG.rawValue: result[name] = UInt64(clamping: parameter.value.l)
            case VIR_TYPED_PARAM_UINT.rawValue: result[name] = UInt64(parameter.value.ui)
            case VIR_TYPED_PARAM_INT.rawValue: result[name] = UInt64(clamping: parameter.value.i)
            case VIR_TYPED_PARAM_BOOLEAN.rawValue: result[name] = parameter.value.b != 0 ? 1 : 0
            case VIR_TYPED_PARAM_DOUBLE.rawValue: result[name] = UInt64(clamping: Int64(max(0, parameter.value.d)))
            default: break
            }
        }
        return result
    }
}
