//! The async-graphql extension the response cache relies on: it tells the executor what
//! kind of operation a document selected (only queries are cached; mutations never are)
//! and collects the tags resolvers record, without a second parse of the document.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{ServerResult, Variables};
use parking_lot::Mutex;

/// Per-request facts the extension learns while async-graphql parses the document.
#[derive(Debug, Default)]
pub struct ExecutionFacts {
    operations: Mutex<Vec<(Option<String>, OperationType)>>,
}

impl ExecutionFacts {
    /// The name of the document's only operation, when it has exactly one and it is named.
    pub fn single_operation_name(&self) -> Option<String> {
        let operations = self.operations.lock();
        match operations.as_slice() {
            [(name, _)] => name.clone(),
            _ => None,
        }
    }

    /// The type of the operation that `operation_name` selects, once the document parsed.
    pub fn operation_type(&self, operation_name: Option<&str>) -> Option<OperationType> {
        let operations = self.operations.lock();
        match operation_name {
            None if operations.len() == 1 => operations.first().map(|(_, kind)| *kind),
            None => None,
            Some(name) => operations
                .iter()
                .find(|(candidate, _)| candidate.as_deref() == Some(name))
                .map(|(_, kind)| *kind),
        }
    }
}

pub struct CacheFactsExtension;

impl ExtensionFactory for CacheFactsExtension {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CacheFactsExtension)
    }
}

#[async_trait::async_trait]
impl Extension for CacheFactsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(facts) = ctx.data_opt::<Arc<ExecutionFacts>>() {
            let operations = match &document.operations {
                DocumentOperations::Single(operation) => vec![(None, operation.node.ty)],
                DocumentOperations::Multiple(operations) => operations
                    .iter()
                    .map(|(name, operation)| (Some(name.to_string()), operation.node.ty))
                    .collect(),
            };
            *facts.operations.lock() = operations;
        }
        Ok(document)
    }
}
