//! Reserved number ranges as half-open intervals, and a merged set of them
//! that answers membership and coverage in logarithmic time (descriptors come
//! from plugins, so hundreds of thousands of ranges must not cost quadratic
//! time).

use std::fmt;

/// `[start, end)` in `i64`, so that the inclusive enum ends and
/// `i32::MAX`-sized message ends cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// Message reserved ranges: `end` is exclusive.
    pub fn exclusive(start: i32, end: i32) -> Self {
        Span { start: i64::from(start), end: i64::from(end) }
    }

    /// Enum reserved ranges: `end` is inclusive.
    pub fn inclusive(start: i32, end: i32) -> Self {
        Span { start: i64::from(start), end: i64::from(end) + 1 }
    }

    pub fn point(number: i32) -> Self {
        Span::inclusive(number, number)
    }

    fn is_empty(self) -> bool {
        self.start >= self.end
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.end - 1;
        if last <= self.start { write!(f, "{}", self.start) } else { write!(f, "{} to {}", self.start, last) }
    }
}

/// The union of some spans, kept sorted, disjoint and non-adjacent, so any
/// span inside the union lies inside a single member.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanSet {
    merged: Vec<Span>,
}

impl SpanSet {
    pub fn new(spans: impl IntoIterator<Item = Span>) -> Self {
        let mut sorted: Vec<Span> = spans.into_iter().filter(|s| !s.is_empty()).collect();
        sorted.sort_unstable();
        let mut merged: Vec<Span> = Vec::with_capacity(sorted.len());
        for span in sorted {
            match merged.last_mut() {
                Some(last) if last.end >= span.start => last.end = last.end.max(span.end),
                _ => merged.push(span),
            }
        }
        SpanSet { merged }
    }

    pub fn contains(&self, number: i32) -> bool {
        self.covers(Span::point(number))
    }

    /// True when every number of `span` lies in the union.
    pub fn covers(&self, span: Span) -> bool {
        if span.is_empty() {
            return true;
        }
        let candidate = self.merged.partition_point(|member| member.end <= span.start);
        self.merged.get(candidate).is_some_and(|member| member.start <= span.start && span.end <= member.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_by_adjacent_and_overlapping_pieces() {
        let set = SpanSet::new([Span::exclusive(5, 8), Span::exclusive(1, 5), Span::exclusive(2, 3)]);
        assert!(set.covers(Span::exclusive(2, 8)));
        assert!(!set.covers(Span::exclusive(2, 9)));
        assert!(!set.covers(Span::exclusive(0, 3)));
        assert!(set.contains(7));
        assert!(!set.contains(8));
    }

    #[test]
    fn gaps_are_not_covered() {
        let set = SpanSet::new([Span::exclusive(1, 3), Span::exclusive(4, 6)]);
        assert!(!set.covers(Span::exclusive(1, 6)));
        assert!(!set.contains(3));
        assert!(set.contains(4));
    }

    #[test]
    fn empty_and_extreme_spans_do_not_overflow() {
        assert!(SpanSet::default().covers(Span::exclusive(9, 3)));
        let all = SpanSet::new([Span::inclusive(i32::MIN, i32::MAX)]);
        assert!(all.contains(i32::MAX));
        assert!(all.contains(i32::MIN));
        assert!(!SpanSet::new([Span::exclusive(7, 2)]).contains(5));
    }

    #[test]
    fn display_uses_inclusive_ends() {
        assert_eq!(Span::exclusive(5, 6).to_string(), "5");
        assert_eq!(Span::exclusive(5, 10).to_string(), "5 to 9");
        assert_eq!(Span::inclusive(2, 4).to_string(), "2 to 4");
    }
}
