/// Chooses the index for a channel: one top-level conjunct of the `where` clause that the matcher
/// can decide exactly from an index, leaving the other conjuncts as the residual.
///
/// Priority: equality on a parameter, membership in a list parameter, geo radius, threshold, scan.
/// Among conjuncts of the same kind the first one written wins.
enum Planner {
    struct Plan {
        var index: IndexPlan
        /// The conjuncts the index does not decide, in source order.
        var residual: [TypedExpr]

        /// The first residual conjunct of the form `field <cmp> $param` (numeric or time).
        var residualThreshold: ResidualThreshold? {
            for conjunct in residual {
                guard case .compare(let op, let l, let r) = conjunct.node,
                    case .threshold(let field, let comparison, .param(let param)) = threshold(op, l, r) ?? threshold(op.mirrored, r, l)
                else { continue }
                return ResidualThreshold(field: field, comparison: comparison, param: param, isWholeResidual: residual.count == 1)
            }
            return nil
        }
    }

    static func plan(_ e: TypedExpr) -> Plan {
        let conjuncts = splitConjuncts(e)
        let candidates = conjuncts.map(indexPlan)
        for rank in 0..<4 {
            for (i, candidate) in candidates.enumerated() {
                guard let candidate, candidate.rank == rank else { continue }
                var residual = conjuncts
                residual.remove(at: i)
                return Plan(index: candidate.plan, residual: residual)
            }
        }
        return Plan(index: .scan, residual: conjuncts)
    }

    /// The operands of the top-level `&&`s, left to right.
    static func splitConjuncts(_ e: TypedExpr) -> [TypedExpr] {
        var out: [TypedExpr] = []
        var stack = [e]
        while let next = stack.popLast() {
            if case .and(let a, let b) = next.node {
                stack.append(b)
                stack.append(a)
            } else {
                out.append(next)
            }
        }
        return out
    }

    /// The index a single conjunct allows, with its priority (0 is best).
    static func indexPlan(_ e: TypedExpr) -> (plan: IndexPlan, rank: Int)? {
        switch e.node {
        case .compare(.equal, let l, let r):
            guard let (field, param) = fieldAndParam(l, r) ?? fieldAndParam(r, l),
                l.type == r.type, [.string, .int, .bool].contains(l.type)
            else { return nil }
            return (.equality(field: field, param: param), 0)

        case .member(let l, let r):
            guard case .field(let field) = l.node, l.type == .string,
                case .param(let param) = r.node, r.type == .stringList
            else { return nil }
            return (.membership(field: field, param: param), 1)

        case .compare(let op, let l, let r):
            // Normalise to `lhs <op> rhs` with the distance or the field on the left.
            if let plan = geoRadius(op, l, r) ?? geoRadius(op.mirrored, r, l) {
                return (plan, 2)
            }
            if let plan = threshold(op, l, r) ?? threshold(op.mirrored, r, l) {
                return (plan, 3)
            }
            return nil

        default:
            return nil
        }
    }

    private static func fieldAndParam(_ a: TypedExpr, _ b: TypedExpr) -> (Int, Int)? {
        guard case .field(let field) = a.node, case .param(let param) = b.node else { return nil }
        return (field, param)
    }

    /// `distance(field, point(A, B)) <= R` or `< R`, either argument order.
    private static func geoRadius(_ op: ComparisonOperator, _ lhs: TypedExpr, _ rhs: TypedExpr) -> IndexPlan? {
        guard op == .lessOrEqual || op == .less,
            case .call(.distance, let args) = lhs.node,
            let radius = operand(rhs)
        else { return nil }
        let pair: (field: Int, point: [TypedExpr])? =
            if case .field(let f) = args[0].node, case .call(.point, let p) = args[1].node {
                (f, p)
            } else if case .field(let f) = args[1].node, case .call(.point, let p) = args[0].node { (f, p) } else { nil }
        guard let pair, let lat = operand(pair.point[0]), let lon = operand(pair.point[1]) else { return nil }
        if case .constant = lat, case .constant = lon { return nil }
        return .geoRadius(field: pair.field, lat: lat, lon: lon, radiusKm: radius, inclusive: op == .lessOrEqual)
    }

    /// `field <cmp> $param` on an int, double or time field.
    private static func threshold(_ op: ComparisonOperator, _ lhs: TypedExpr, _ rhs: TypedExpr) -> IndexPlan? {
        guard case .field(let field) = lhs.node, case .param(let param) = rhs.node,
            lhs.type.isNumeric || lhs.type == .time
        else { return nil }
        let comparison: Comparison
        switch op {
        case .less: comparison = .lessThan
        case .lessOrEqual: comparison = .lessOrEqual
        case .greater: comparison = .greaterThan
        case .greaterOrEqual: comparison = .greaterOrEqual
        case .equal, .notEqual: return nil
        }
        return .threshold(field: field, comparison: comparison, bound: .param(param))
    }

    /// A numeric parameter or a numeric literal (possibly negated).
    private static func operand(_ e: TypedExpr) -> Operand? {
        guard e.type.isNumeric else { return nil }
        if case .param(let index) = e.node { return .param(index) }
        return Compiler.constantNumber(e).map(Operand.constant)
    }
}
