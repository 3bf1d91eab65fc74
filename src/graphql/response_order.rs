//! Puts a response's fields in the order the query selected them, as the GraphQL spec's
//! "Serialized Map Ordering" asks: async-graphql resolves sibling fields concurrently and
//! keeps them in the order they finished. The order is learned from the document before it
//! runs (CollectFields: response keys, fragments merged in document order, the first
//! occurrence of a key fixes its place) and applied in one pass over the response.

use std::collections::HashMap;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, Value};

use super::document_cost::MAX_EXPANDED_FIELDS;

/// Above this many keys a selection set finds a key's place by hashing, below by scanning.
const SCAN_LIMIT: usize = 8;

/// The selection order of one operation, ready to apply to its responses.
#[derive(Debug)]
pub struct ResponseOrder {
    pub(super) operation: OperationType,
    pub(super) root: SelectionOrder,
}

/// The response keys of one (merged) selection set in selection order, with the field each
/// key answers and the order of each key's own merged sub-selections.
#[derive(Debug, Default)]
pub(super) struct SelectionOrder {
    keys: Vec<Name>,
    pub(super) fields: Vec<Name>,
    positions: HashMap<Name, usize>,
    pub(super) children: Vec<Option<SelectionOrder>>,
}

impl SelectionOrder {
    pub(super) fn position(&self, key: &str) -> Option<usize> {
        if self.keys.len() <= SCAN_LIMIT {
            self.keys
                .iter()
                .position(|candidate| candidate.as_str() == key)
        } else {
            self.positions.get(key).copied()
        }
    }
}

/// The fragments of the document, and a bound on the work of expanding them: the plan is
/// built before validation, so a fragment cycle or a fragment bomb must not run away.
struct Expansion<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    expanding: Vec<&'a str>,
    budget: u64,
}

impl ResponseOrder {
    /// The order of the operation `operation_name` selects, or `None` when there is no such
    /// operation or its expansion exceeds the document size limit (it will not run either).
    pub fn of(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<Self> {
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(operation), _) => operation,
            (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
            (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
                operations.values().next()?
            }
            (DocumentOperations::Multiple(_), None) => return None,
        };
        let mut expansion = Expansion {
            fragments: &document.fragments,
            expanding: Vec::new(),
            budget: MAX_EXPANDED_FIELDS,
        };
        let root = expansion.merge(&[&operation.node.selection_set.node])?;
        Some(ResponseOrder {
            operation: operation.node.ty,
            root,
        })
    }

    /// Reorders `data` in place. Work is linear in the size of the response (plus a sort of
    /// the keys of each object that is out of order), whatever the size of the document.
    pub fn apply(&self, data: &mut Value) {
        reorder(&self.root, data);
    }
}

impl<'a> Expansion<'a> {
    /// One selection order for several selection sets that answer the same response key.
    fn merge(&mut self, sets: &[&'a SelectionSet]) -> Option<SelectionOrder> {
        let mut order = SelectionOrder::default();
        let mut sub_sets: Vec<Vec<&'a SelectionSet>> = Vec::new();
        for set in sets {
            self.collect(set, &mut order, &mut sub_sets)?;
        }
        if order.keys.len() > SCAN_LIMIT {
            order.positions = order
                .keys
                .iter()
                .enumerate()
                .map(|(position, key)| (key.clone(), position))
                .collect();
        }
        order.children = sub_sets
            .iter()
            .map(|sets| {
                if sets.is_empty() {
                    Some(None)
                } else {
                    self.merge(sets).map(Some)
                }
            })
            .collect::<Option<_>>()?;
        Some(order)
    }

    fn collect(
        &mut self,
        set: &'a SelectionSet,
        order: &mut SelectionOrder,
        sub_sets: &mut Vec<Vec<&'a SelectionSet>>,
    ) -> Option<()> {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    self.budget = self.budget.checked_sub(1)?;
                    let key = &field.node.response_key().node;
                    let position = match order.keys.iter().position(|candidate| candidate == key) {
                        Some(position) => position,
                        None => {
                            order.keys.push(key.clone());
                            order.fields.push(field.node.name.node.clone());
                            sub_sets.push(Vec::new());
                            order.keys.len() - 1
                        }
                    };
                    let sub_set = &field.node.selection_set.node;
                    if !sub_set.items.is_empty()
                        && let Some(sets) = sub_sets.get_mut(position)
                    {
                        sets.push(sub_set);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    self.collect(&fragment.node.selection_set.node, order, sub_sets)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    // A fragment already being expanded is a cycle (validation refuses it);
                    // an unknown fragment is reported by validation too.
                    if self.expanding.contains(&name) {
                        return None;
                    }
                    let Some(fragment) = self.fragments.get(name) else {
                        continue;
                    };
                    self.expanding.push(name);
                    self.collect(&fragment.node.selection_set.node, order, sub_sets)?;
                    self.expanding.pop();
                }
            }
        }
        Some(())
    }
}

fn reorder(order: &SelectionOrder, value: &mut Value) {
    match value {
        Value::List(items) => {
            for item in items {
                reorder(order, item);
            }
        }
        Value::Object(members) => {
            // One pass: each key's place is looked up once, to reorder its value and to see
            // whether this object is already in order (the common case: nothing to move).
            let mut previous = 0;
            let mut in_order = true;
            for (key, member) in members.iter_mut() {
                let position = order.position(key.as_str());
                let place = position.unwrap_or(usize::MAX);
                in_order &= place >= previous;
                previous = place;
                if let Some(Some(child)) =
                    position.and_then(|position| order.children.get(position))
                {
                    reorder(child, member);
                }
            }
            if !in_order {
                members.sort_by_cached_key(|key, _| {
                    order.position(key.as_str()).unwrap_or(usize::MAX)
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_of(query: &str) -> Option<ResponseOrder> {
        let document = async_graphql::parser::parse_query(query).ok()?;
        ResponseOrder::of(&document, None)
    }

    #[test]
    fn a_fragment_cycle_gives_no_order() {
        assert!(
            order_of("{ ...A } fragment A on Query { a ...B } fragment B on Query { ...A }")
                .is_none()
        );
    }

    #[test]
    fn a_fragment_bomb_gives_no_order() {
        let mut query = String::from("{ ...F0 }");
        for level in 0..30 {
            let next = level + 1;
            query.push_str(&format!(
                " fragment F{level} on Query {{ a ...F{next} ...F{next} }}"
            ));
        }
        query.push_str(" fragment F30 on Query { a }");
        assert!(order_of(&query).is_none());
    }

    #[test]
    fn keys_follow_the_selection_and_nested_objects_too() {
        let order = order_of("{ b a { y x } }").expect("order");
        let mut data = Value::from_json(serde_json::json!({
            "a": [{ "x": 1, "y": 2 }, { "x": 3, "y": 4 }],
            "b": 0
        }))
        .expect("value");
        order.apply(&mut data);
        assert_eq!(
            serde_json::to_string(&data).expect("json"),
            r#"{"b":0,"a":[{"y":2,"x":1},{"y":4,"x":3}]}"#
        );
    }
}
