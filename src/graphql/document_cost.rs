//! What a parsed document would cost, measured before async-graphql validates it.
//!
//! async-graphql's validators expand fragment spreads each time they meet them, so a 1 KB
//! chain of fragments that each spread the next one twice costs exponential time. This pass
//! visits every fragment once (sizes are memoized, fragments resolved with an explicit stack),
//! so it is linear in the document, and it refuses documents over their budget before any
//! exponential work starts. It also recognises introspection-only operations, which get their
//! own depth bound (the standard introspection query nests `ofType` nine levels deep) and a
//! budget on their fan-out instead.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};

/// Fields a document may select once every fragment spread is expanded.
pub const MAX_EXPANDED_FIELDS: u64 = 10_000;

/// Fields (aliases included) an operation may select at its root: each is a lookup, and
/// thousands of aliased `product(id:)` fields make one request do the work of thousands.
pub const MAX_ROOT_FIELDS: usize = 100;

/// Estimated values an introspection-only operation may produce. Every list-valued
/// introspection field counts [`INTROSPECTION_FANOUT`] items; the standard introspection
/// query (graphql-js `getIntrospectionQuery` with every option) is about 360,000 by this
/// measure, and `__schema { types { fields { type { fields { type { fields ... ` is refused.
pub const MAX_INTROSPECTION_COST: u64 = 1_000_000;
const INTROSPECTION_FANOUT: u64 = 20;
const INTROSPECTION_LISTS: &[&str] = &[
    "types",
    "fields",
    "args",
    "inputFields",
    "interfaces",
    "possibleTypes",
    "enumValues",
    "directives",
    "locations",
];

/// The cost of the operation a request selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentCost {
    /// Fields selected with every fragment expanded (saturating).
    pub expanded_fields: u64,
    /// Distinct fields at the operation's root, fragments looked through.
    pub root_fields: usize,
    /// Every root field is `__schema`, `__type` or `__typename`, and one is not `__typename`.
    pub introspection_only: bool,
    /// The operation asks for `__schema` or `__type` somewhere at its root.
    pub uses_introspection: bool,
    /// Estimated introspection output (see [`MAX_INTROSPECTION_COST`]).
    pub introspection_cost: u64,
}

impl DocumentCost {
    /// Measures the operation `operation_name` selects; `None` when it selects none (left for
    /// async-graphql to report).
    pub fn of(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<Self> {
        let operation = selected_operation(document, operation_name)?;
        let mut measure = Measure {
            document,
            fragments: HashMap::new(),
        };
        let roots = measure.root_fields(&operation.selection_set.node);
        let mut cost = DocumentCost {
            root_fields: roots.len(),
            expanded_fields: measure
                .selection_set(&operation.selection_set.node, false)
                .fields,
            introspection_only: !roots.is_empty(),
            uses_introspection: false,
            introspection_cost: 0,
        };
        let mut introspects = false;
        for field in roots {
            let name = field.name.node.as_str();
            let in_introspection = matches!(name, "__schema" | "__type");
            introspects |= in_introspection;
            cost.introspection_only &= in_introspection || name == "__typename";
            if in_introspection {
                let children = measure.selection_set(&field.selection_set.node, true);
                cost.introspection_cost = cost
                    .introspection_cost
                    .saturating_add(1)
                    .saturating_add(children.weighted);
            }
        }
        cost.uses_introspection = introspects;
        cost.introspection_only &= introspects;
        Some(cost)
    }
}

fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(candidate, _)| candidate.as_str() == name)
            .map(|(_, operation)| &operation.node),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Fields in a selection set with fragments expanded, plain and weighted by fan-out.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    fields: u64,
    weighted: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.fields = self.fields.saturating_add(other.fields);
        self.weighted = self.weighted.saturating_add(other.weighted);
    }
}

/// A fragment's size depends on whether it is used inside introspection (fan-out applies).
type FragmentKey<'a> = (&'a str, bool);

struct Measure<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<FragmentKey<'a>, Size>,
}

impl<'a> Measure<'a> {
    /// The distinct fields at the operation's root, looking through fragments (each fragment
    /// once, without recursion).
    fn root_fields(&self, set: &'a SelectionSet) -> Vec<&'a async_graphql::parser::types::Field> {
        let mut fields = Vec::new();
        let mut visited = HashSet::new();
        let mut sets = vec![set];
        while let Some(set) = sets.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => fields.push(&field.node),
                    Selection::InlineFragment(inline) => sets.push(&inline.node.selection_set.node),
                    Selection::FragmentSpread(spread) => {
                        let name = &spread.node.fragment_name.node;
                        if visited.insert(name.as_str())
                            && let Some(fragment) = self.document.fragments.get(name)
                        {
                            sets.push(&fragment.node.selection_set.node);
                        }
                    }
                }
            }
        }
        fields
    }

    /// The size of a selection set. Fragments are resolved first, each once, without
    /// recursion through spreads (a chain of 50,000 fragments must not exhaust the stack).
    fn selection_set(&mut self, set: &'a SelectionSet, introspection: bool) -> Size {
        self.resolve_fragments_used_by(set, introspection);
        self.size_with_known_fragments(set, introspection)
    }

    fn resolve_fragments_used_by(&mut self, set: &'a SelectionSet, introspection: bool) {
        let mut pending: Vec<FragmentKey<'a>> = Vec::new();
        collect_spreads(set, introspection, &mut pending);
        // Depth-first over fragment names: a fragment is sized once all it spreads are sized.
        // A cycle (refused later by validation) counts as empty.
        let mut in_progress: HashSet<FragmentKey<'a>> = HashSet::new();
        let mut stack: Vec<FragmentKey<'a>> = pending;
        while let Some(key) = stack.pop() {
            if self.fragments.contains_key(&key) {
                continue;
            }
            let Some(fragment) = self.document.fragments.get(key.0) else {
                self.fragments.insert(key, Size::default());
                continue;
            };
            let set = &fragment.node.selection_set.node;
            let mut spreads = Vec::new();
            collect_spreads(set, key.1, &mut spreads);
            let unresolved: Vec<FragmentKey<'a>> = spreads
                .into_iter()
                .filter(|spread| {
                    !self.fragments.contains_key(spread) && !in_progress.contains(spread)
                })
                .collect();
            if unresolved.is_empty() {
                let size = self.size_with_known_fragments(set, key.1);
                self.fragments.insert(key, size);
                in_progress.remove(&key);
            } else {
                in_progress.insert(key);
                stack.push(key);
                stack.extend(unresolved);
            }
        }
    }

    /// Sizes a set whose spread fragments are all sized (unknown ones count as empty).
    fn size_with_known_fragments(&self, set: &'a SelectionSet, introspection: bool) -> Size {
        let mut size = Size::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let children =
                        self.size_with_known_fragments(&field.selection_set.node, introspection);
                    let fanout = if introspection
                        && INTROSPECTION_LISTS.contains(&field.name.node.as_str())
                    {
                        INTROSPECTION_FANOUT
                    } else {
                        1
                    };
                    size.add(Size {
                        fields: children.fields.saturating_add(1),
                        weighted: children.weighted.saturating_add(1).saturating_mul(fanout),
                    });
                }
                Selection::InlineFragment(inline) => size.add(
                    self.size_with_known_fragments(&inline.node.selection_set.node, introspection),
                ),
                Selection::FragmentSpread(spread) => {
                    let key = (spread.node.fragment_name.node.as_str(), introspection);
                    size.add(self.fragments.get(&key).copied().unwrap_or_default());
                }
            }
        }
        size
    }
}

/// The fragments a selection set spreads directly or through nested fields and inline
/// fragments (not through other fragments).
fn collect_spreads<'a>(set: &'a SelectionSet, introspection: bool, out: &mut Vec<FragmentKey<'a>>) {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                collect_spreads(&field.node.selection_set.node, introspection, out)
            }
            Selection::InlineFragment(inline) => {
                collect_spreads(&inline.node.selection_set.node, introspection, out)
            }
            Selection::FragmentSpread(spread) => {
                out.push((spread.node.fragment_name.node.as_str(), introspection))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(query: &str) -> DocumentCost {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        DocumentCost::of(&document, None).expect("one operation")
    }

    /// `selection` spreads `F0`; each `F{n}` on `on` spreads `F{n+1}` twice, `levels` deep, and
    /// the last selects `leaf`: 2^levels leaves once expanded.
    fn doubling_fragments(selection: &str, on: &str, levels: u32, leaf: &str) -> String {
        let mut query = format!("{selection}\n");
        for level in 0..levels {
            let next = level + 1;
            query.push_str(&format!(
                "fragment F{level} on {on} {{ ...F{next} ...F{next} }}\n"
            ));
        }
        query.push_str(&format!("fragment F{levels} on {on} {{ {leaf} }}\n"));
        query
    }

    #[test]
    fn a_doubling_fragment_chain_is_measured_without_expanding_it() {
        let query = doubling_fragments(
            "{ products { edges { node { ...F0 } } } }",
            "Product",
            60,
            "id",
        );
        let started = std::time::Instant::now();
        let measured = cost(&query);
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        assert!(measured.expanded_fields > MAX_EXPANDED_FIELDS);
        assert!(!measured.introspection_only);
    }

    #[test]
    fn a_fragment_bomb_at_the_root_is_measured_too() {
        let query = doubling_fragments("{ ...F0 }", "Query", 64, "__schema { types { name } }");
        let measured = cost(&query);
        assert_eq!(measured.expanded_fields, u64::MAX);
        assert!(measured.introspection_only);
    }

    #[test]
    fn fragment_cycles_and_unknown_fragments_count_as_empty() {
        let measured = cost(
            "{ a ...A } fragment A on Query { b ...B ...Nope } fragment B on Query { c ...A }",
        );
        assert_eq!(measured.expanded_fields, 3);
    }

    #[test]
    fn introspection_fan_out_is_weighted_and_plain_fields_are_not() {
        let plain =
            cost("{ products { edges { node { category { products { totalCount } } } } } }");
        assert_eq!(plain.introspection_cost, 0);
        assert!(!plain.uses_introspection);
        let nested = cost(
            "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }",
        );
        assert!(nested.introspection_only);
        assert!(nested.introspection_cost > MAX_INTROSPECTION_COST);
        let typename = cost("{ __typename }");
        assert!(!typename.introspection_only);
    }

    proptest::proptest! {
        /// Any text that parses is measured without a panic; any body that is JSON either
        /// becomes an operation or is refused.
        #[test]
        fn any_parsed_document_is_measured(text in "[{}a-z_ .:!$()@#\\n\"]{0,80}") {
            if let Ok(document) = async_graphql::parser::parse_query(&text) {
                let _ = DocumentCost::of(&document, None);
                let _ = DocumentCost::of(&document, Some("A"));
            }
            let _ = serde_json::from_str::<crate::graphql::executor::Operation>(&text);
        }
    }
}
