/// Resolves names and checks types of a parsed expression against a stream schema and a channel's
/// parameters. Every error names the line and column of the offending token.
struct TypeChecker {
    let schema: StreamSchema
    let params: [ChannelParameter]
    /// In an enrich clause, the dataset it reads: `name.field` is the field's slot after the
    /// event's (the compiled clause sees the event's record followed by the dataset record's).
    var joined: (name: String, schema: StreamSchema)? = nil

    func check(_ expr: Expr) throws(TocsinError) -> TypedExpr {
        switch expr.kind {
        case .int(let v): return TypedExpr(node: .constant(.int(v)), type: .int)
        case .double(let v): return TypedExpr(node: .constant(.double(v)), type: .double)
        case .string(let s): return TypedExpr(node: .constant(.string(s)), type: .string)
        case .bool(let b): return TypedExpr(node: .constant(.bool(b)), type: .bool)
        case .null: return TypedExpr(node: .constant(.null), type: .null)
        case .duration(let ms): return TypedExpr(node: .duration(ms), type: .duration)

        case .list(let items):
            var typed: [TypedExpr] = []
            for item in items {
                let t = try check(item)
                guard t.type == .string else {
                    throw error(item.location, "list items must be strings, found \(describe(t.type))")
                }
                typed.append(t)
            }
            return TypedExpr(node: .list(typed), type: .stringList)

        case .field(let name):
            guard let slot = schema.slot(of: name) else {
                let known = schema.fields.map(\.name).joined(separator: ", ")
                var message = "unknown field '\(name)' (fields: \(known))"
                if params.contains(where: { $0.name == name }) {
                    message += "; to use the parameter, write $\(name)"
                } else if Function(rawValue: name) != nil {
                    message += "; to call the function, write \(name)(...)"
                }
                throw error(expr.location, message)
            }
            return TypedExpr(node: .field(slot: slot), type: ExprType(schema.fields[slot].type))

        case .qualified(let dataset, let name):
            guard let joined else {
                throw error(expr.location, "'\(dataset).\(name)' names a dataset's field, which only an enrich clause can read")
            }
            guard dataset == joined.name else {
                throw error(expr.location, "unknown dataset '\(dataset)': this clause reads '\(joined.name)' (write \(joined.name).\(name))")
            }
            guard let slot = joined.schema.slot(of: name) else {
                let known = joined.schema.fields.map(\.name).joined(separator: ", ")
                throw error(expr.location, "dataset '\(dataset)' has no field '\(name)' (fields: \(known))")
            }
            return TypedExpr(node: .field(slot: schema.fields.count + slot), type: ExprType(joined.schema.fields[slot].type))

        case .param(let name):
            guard let index = params.firstIndex(where: { $0.name == name }) else {
                let known = params.map { "$" + $0.name }.joined(separator: ", ")
                var message =
                    "unknown parameter '$\(name)' (\(known.isEmpty ? "the channel declares no parameters" : "parameters: " + known))"
                if schema.slot(of: name) != nil {
                    message += "; to use the field, write \(name)"
                }
                throw error(expr.location, message)
            }
            return TypedExpr(node: .param(index: index), type: ExprType(params[index].type))

        case .unary(.not, let operand):
            let t = try check(operand)
            try requireBool(t, operand, what: "'!'")
            return TypedExpr(node: .not(t), type: .bool)

        case .unary(.negate, let operand):
            let t = try check(operand)
            guard t.type.isNumeric || t.type == .duration else {
                throw error(expr.location, "unary '-' needs a number or a duration, found \(describe(t.type))")
            }
            return TypedExpr(node: .negate(t), type: t.type)

        case .binary(let op, let lhs, let rhs):
            return try checkBinary(op, lhs, rhs, at: expr.location)

        case .call(let name, let args):
            return try checkCall(name, args, at: expr.location)
        }
    }

    private func checkBinary(_ op: Expr.BinaryOperator, _ lhs: Expr, _ rhs: Expr, at location: SourcePosition) throws(TocsinError)
        -> TypedExpr
    {
        let l = try check(lhs)
        let r = try check(rhs)
        switch op {
        case .and, .or:
            try requireBool(l, lhs, what: "'\(op.rawValue)'")
            try requireBool(r, rhs, what: "'\(op.rawValue)'")
            return TypedExpr(node: op == .and ? .and(l, r) : .or(l, r), type: .bool)

        case .equal, .notEqual:
            let negated = op == .notEqual
            if l.type == .null || r.type == .null {
                if l.type == .null && r.type == .null {
                    return TypedExpr(node: .constant(.bool(!negated)), type: .bool)
                }
                let other = l.type == .null ? (r, rhs) : (l, lhs)
                if other.0.type == .duration { throw durationMisuse(other.1.location) }
                return TypedExpr(node: .isNull(other.0, negated: negated), type: .bool)
            }
            fallthrough
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let comparison = ComparisonOperator(rawValue: op.rawValue)!
            for (t, e) in [(l, lhs), (r, rhs)] {
                if t.type == .duration { throw durationMisuse(e.location) }
                if t.type == .null {
                    throw error(e.location, "null can only be compared with '==' or '!='")
                }
            }
            let comparable: Bool
            if comparison == .equal || comparison == .notEqual {
                comparable = l.type == r.type || (l.type.isNumeric && r.type.isNumeric)
            } else {
                comparable =
                    (l.type.isNumeric && r.type.isNumeric) || (l.type == r.type && (l.type == .time || l.type == .string))
            }
            guard comparable else {
                var message = "cannot compare \(describe(l.type)) with \(describe(r.type)) using '\(op.rawValue)'"
                if l.type == r.type {
                    message = "'\(op.rawValue)' cannot order values of type \(l.type) (only numbers, times and strings)"
                } else if l.type == .time || r.type == .time {
                    message += " (compare a time with a time, e.g. time >= now() - 1h or time >= $since)"
                }
                throw error(location, message)
            }
            return TypedExpr(node: .compare(comparison, l, r), type: .bool)

        case .in:
            guard r.type == .stringList else {
                throw error(
                    rhs.location,
                    "'in' needs a list of strings on the right, like [\"a\", \"b\"] or a list<string> parameter, found \(describe(r.type))")
            }
            guard l.type == .string else {
                throw error(lhs.location, "'in' needs a string on the left, found \(describe(l.type))")
            }
            return TypedExpr(node: .member(l, r), type: .bool)

        case .add, .subtract, .multiply, .divide:
            let arithmetic: ArithmeticOperator =
                switch op {
                case .add: .add
                case .subtract: .subtract
                case .multiply: .multiply
                default: .divide
                }
            if l.type.isNumeric && r.type.isNumeric {
                let type: ExprType = (l.type == .int && r.type == .int && op != .divide) ? .int : .double
                return TypedExpr(node: .arithmetic(arithmetic, l, r), type: type)
            }
            if l.type == .time && r.type == .duration && (op == .add || op == .subtract) {
                return TypedExpr(node: .arithmetic(arithmetic, l, r), type: .time)
            }
            if l.type == .duration && r.type == .time && op == .add {
                return TypedExpr(node: .arithmetic(arithmetic, r, l), type: .time)
            }
            var message = "'\(op.rawValue)' cannot combine \(describe(l.type)) and \(describe(r.type))"
            if l.type == .time || r.type == .time || l.type == .duration || r.type == .duration {
                message += " (time arithmetic is time + duration or time - duration, like now() - 1h)"
            } else {
                message += " (arithmetic needs numbers)"
            }
            throw error(location, message)

        }
    }

    private func checkCall(_ name: String, _ args: [Expr], at location: SourcePosition) throws(TocsinError) -> TypedExpr {
        guard let function = Function(rawValue: name) else {
            let known = Function.allCases.map(\.rawValue).joined(separator: ", ")
            throw error(location, "unknown function '\(name)' (functions: \(known))")
        }
        let expected: [ExprType]
        let result: ExprType
        switch function {
        case .distance: (expected, result) = ([.geo, .geo], .double)
        case .point: (expected, result) = ([.double, .double], .geo)
        case .contains: (expected, result) = ([.stringList, .string], .bool)
        case .startsWith: (expected, result) = ([.string, .string], .bool)
        case .now: (expected, result) = ([], .time)
        case .len: (expected, result) = ([.stringList], .int)
        case .lower: (expected, result) = ([.string], .string)
        }
        guard args.count == expected.count else {
            let count = expected.count == 1 ? "1 argument" : "\(expected.count) arguments"
            throw error(location, "\(name) takes \(count), got \(args.count): \(function.signature)")
        }
        var typed: [TypedExpr] = []
        for (i, (arg, want)) in zip(args, expected).enumerated() {
            let t = try check(arg)
            let fits = t.type == want || (want == .double && t.type.isNumeric)
            guard fits else {
                throw error(
                    arg.location,
                    "argument \(i + 1) of \(name) must be \(want == .double ? "a number" : describe(want)), found \(describe(t.type)): \(function.signature)"
                )
            }
            typed.append(t)
        }
        return TypedExpr(node: .call(function, typed), type: result)
    }

    private func requireBool(_ t: TypedExpr, _ e: Expr, what: String) throws(TocsinError) {
        guard t.type == .bool else {
            throw error(e.location, "\(what) needs a boolean, found \(describe(t.type))")
        }
    }

    private func describe(_ type: ExprType) -> String {
        switch type {
        case .null: "null"
        case .duration: "a duration"
        default: type.description
        }
    }

    private func durationMisuse(_ at: SourcePosition) -> TocsinError {
        error(at, "a duration can only be added to or subtracted from a time, like now() - 1h")
    }

    private func error(_ at: SourcePosition, _ message: String) -> TocsinError {
        TocsinError(.invalidChannel, "at \(at): \(message)")
    }
}
