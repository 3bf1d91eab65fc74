//! Gives a failed field the place the GraphQL spec ("Handling Execution Errors") gives it:
//! async-graphql 7.2 leaves a field whose resolver failed out of its parent object (and turns
//! an object whose every field failed into `null`), so a client such as Apollo Client or Relay
//! finds a key missing. Here each error's path is followed through the response: the failed
//! field is answered `null`, and a `null` where the schema says non-null makes its parent
//! `null` in turn, up to the nearest nullable field or to `data` itself. Work is linear in the
//! length of the errors' paths; a response without errors is not looked at.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_graphql::parser::types::{BaseType, OperationType, Type, TypeKind, TypeSystemDefinition};
use async_graphql::{Name, PathSegment, ServerError, Value};

use super::response_order::{ResponseOrder, SelectionOrder};
use super::schema::{SchemaLimits, builder};

/// The type of every field of every object type, and the root types, read once from the
/// schema's own SDL.
struct FieldTypes {
    query: Name,
    mutation: Name,
    fields: HashMap<Name, HashMap<Name, Type>>,
}

static FIELD_TYPES: LazyLock<FieldTypes> = LazyLock::new(|| {
    let sdl = builder(SchemaLimits::default()).finish().sdl();
    let document = async_graphql::parser::parse_schema(&sdl).expect("the schema's SDL parses");
    let mut types = FieldTypes {
        query: Name::new("Query"),
        mutation: Name::new("Mutation"),
        fields: HashMap::new(),
    };
    for definition in document.definitions {
        match definition {
            TypeSystemDefinition::Schema(schema) => {
                if let Some(query) = schema.node.query {
                    types.query = query.node;
                }
                if let Some(mutation) = schema.node.mutation {
                    types.mutation = mutation.node;
                }
            }
            TypeSystemDefinition::Type(definition) => {
                if let TypeKind::Object(object) = definition.node.kind {
                    let fields = object
                        .fields
                        .into_iter()
                        .map(|field| (field.node.name.node, field.node.ty.node))
                        .collect();
                    types.fields.insert(definition.node.name.node, fields);
                }
            }
            TypeSystemDefinition::Directive(_) => {}
        }
    }
    types
});

/// Reads the schema's field types now, so the first failed request does not pay for it.
pub fn prepare() {
    LazyLock::force(&FIELD_TYPES);
}

/// Answers every field that `errors` say failed with `null`, and propagates each `null` that
/// lands in a non-null position to its parent, as far as `data` itself.
pub fn complete(data: &mut Value, errors: &[ServerError], order: &ResponseOrder) {
    let types = &*FIELD_TYPES;
    let root = match order.operation {
        OperationType::Query => &types.query,
        OperationType::Mutation => &types.mutation,
        OperationType::Subscription => return,
    };
    let root = Type {
        base: BaseType::Named(root.clone()),
        nullable: true,
    };
    let paths = || errors.iter().map(|error| error.path.as_slice());
    // First every failed field gets its `null` (and every object emptied by failures its
    // members back), then the nulls propagate: propagating first could empty an object that a
    // later error's path still has to pass through.
    for path in paths() {
        place_nulls(types, data, &root, Some(&order.root), path);
    }
    for path in paths() {
        propagate_nulls(types, data, &root, Some(&order.root), path);
    }
}

/// The field `key` of an object of type `parent` answered by `selection`: its type and its own
/// selection.
fn field<'a>(
    types: &'a FieldTypes,
    parent: &Type,
    selection: Option<&'a SelectionOrder>,
    key: &str,
) -> Option<(&'a Type, Option<&'a SelectionOrder>)> {
    let BaseType::Named(parent) = &parent.base else {
        return None;
    };
    let selection = selection?;
    let position = selection.position(key)?;
    let field_type = types.fields.get(parent)?.get(&selection.fields[position])?;
    Some((field_type, selection.children[position].as_ref()))
}

fn place_nulls(
    types: &FieldTypes,
    value: &mut Value,
    ty: &Type,
    selection: Option<&SelectionOrder>,
    path: &[PathSegment],
) {
    match (path.split_first(), &ty.base) {
        (Some((PathSegment::Index(index), rest)), BaseType::List(item_type)) => {
            if let Value::List(items) = value
                && let Some(item) = items.get_mut(*index)
            {
                place_nulls(types, item, item_type, selection, rest);
            }
        }
        (Some((PathSegment::Field(key), rest)), BaseType::Named(_)) => {
            let Some((field_type, selection)) = field(types, ty, selection, key) else {
                return;
            };
            // A path passes through this object, so it was resolved: a null here is an object
            // whose every field failed.
            if *value == Value::Null {
                *value = Value::Object(Default::default());
            }
            if let Value::Object(members) = value {
                let member = members.entry(Name::new(key)).or_insert(Value::Null);
                place_nulls(types, member, field_type, selection, rest);
            }
        }
        _ => {}
    }
}

/// Follows `path` and, on the way back, makes a value null where a member the schema calls
/// non-null is null.
fn propagate_nulls(
    types: &FieldTypes,
    value: &mut Value,
    ty: &Type,
    selection: Option<&SelectionOrder>,
    path: &[PathSegment],
) {
    let null_member_not_allowed = match (path.split_first(), &ty.base, &mut *value) {
        (
            Some((PathSegment::Index(index), rest)),
            BaseType::List(item_type),
            Value::List(items),
        ) => items.get_mut(*index).is_some_and(|item| {
            propagate_nulls(types, item, item_type, selection, rest);
            *item == Value::Null && !item_type.nullable
        }),
        (Some((PathSegment::Field(key), rest)), BaseType::Named(_), Value::Object(members)) => {
            match (
                field(types, ty, selection, key),
                members.get_mut(key.as_str()),
            ) {
                (Some((field_type, selection)), Some(member)) => {
                    propagate_nulls(types, member, field_type, selection, rest);
                    *member == Value::Null && !field_type.nullable
                }
                _ => false,
            }
        }
        _ => false,
    };
    if null_member_not_allowed {
        *value = Value::Null;
    }
}
