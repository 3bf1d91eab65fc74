// Apollo Client against a running catalog-api, as a front end would use it: its normalized
// cache, a partial result with errorPolicy "all", a mutation whose answer updates the cached
// product, and automatic persisted queries over GET. Prints one JSON array of
// { name, ok, detail } and exits 0; the Rust test (tests/api/apollo_client.rs) asserts on it.
//
//   node check.mjs http://127.0.0.1:8000/graphql TOKEN

import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node check.mjs GRAPHQL_URL TOKEN");
  process.exit(2);
}

// Apollo Client reports a response it cannot write into its cache (a missing field, say) on
// the console; every such message counts as a failure.
const complaints = [];
for (const level of ["warn", "error"]) {
  const original = console[level];
  console[level] = (...args) => {
    complaints.push(args.map(String).join(" "));
    original.apply(console, args);
  };
}

// Every request the client sends, to check what went over the wire.
const sent = [];
const recordingFetch = (input, init = {}) => {
  sent.push({ method: init.method ?? "GET", url: String(input), body: init.body ?? null });
  return fetch(input, init);
};

function client(...links) {
  const http = new HttpLink({
    uri: url,
    fetch: recordingFetch,
    headers: { authorization: `Bearer ${token}` },
  });
  return new ApolloClient({
    link: links.reduceRight((next, link) => link.concat(next), http),
    cache: new InMemoryCache(),
  });
}

const results = [];
async function check(name, run) {
  const before = complaints.length;
  try {
    const detail = await run();
    const said = complaints.slice(before);
    results.push(
      said.length === 0
        ? { name, ok: true, detail }
        : { name, ok: false, detail: `Apollo Client complained: ${said.join(" | ")}` },
    );
  } catch (error) {
    results.push({ name, ok: false, detail: String(error?.stack ?? error) });
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const PAGE = gql`
  query Page($first: Int!) {
    products(first: $first) {
      totalCount
      edges { node { id name price category { id name } } }
    }
  }
`;

await check("a page is written to the normalized cache, one entry per product", async () => {
  const apollo = client();
  const { data } = await apollo.query({ query: PAGE, variables: { first: 3 } });
  expect(data.products.edges.length === 3, `3 edges, got ${JSON.stringify(data)}`);
  const cached = apollo.cache.extract();
  for (const { node } of data.products.edges) {
    expect(cached[`Product:${node.id}`]?.name === node.name, `Product:${node.id} cached`);
    expect(cached[`Category:${node.category.id}`], `Category:${node.category.id} cached`);
  }
  return `${Object.keys(cached).length} cache entries`;
});

await check("a failed field is null beside the data that resolved (errorPolicy all)", async () => {
  const apollo = client();
  const { data, error } = await apollo.query({
    query: gql`
      {
        missing: product(id: "nope") { id name }
        found: product(id: "2") { id name }
      }
    `,
    errorPolicy: "all",
  });
  expect(data?.missing === null, `missing is null: ${JSON.stringify(data)}`);
  expect(data?.found?.name === "Product 000002", `found resolved: ${JSON.stringify(data)}`);
  const codes = (error?.errors ?? []).map((each) => each.extensions?.code);
  expect(codes.join() === "BAD_USER_INPUT", `one BAD_USER_INPUT error, got ${codes}`);
  return "data.missing === null";
});

await check("a mutation's answer updates the cached product a later query reads", async () => {
  const apollo = client();
  const PRODUCT = gql`
    query Product($id: ID!) { product(id: $id) { id name price } }
  `;
  const before = await apollo.query({ query: PRODUCT, variables: { id: "7" } });
  const price = before.data.product.price === "12.34" ? "43.21" : "12.34";
  await apollo.mutate({
    mutation: gql`
      mutation Reprice($id: ID!, $price: Decimal!) {
        updateProduct(id: $id, input: { price: $price }) { id price }
      }
    `,
    variables: { id: "7", price },
  });
  const cached = await apollo.query({
    query: PRODUCT,
    variables: { id: "7" },
    fetchPolicy: "cache-only",
  });
  expect(cached.data.product.price === price, `cache has ${cached.data.product.price}`);
  const server = await apollo.query({
    query: PRODUCT,
    variables: { id: "7" },
    fetchPolicy: "network-only",
  });
  expect(server.data.product.price === price, `server answers ${server.data.product.price}`);
  return `price ${before.data.product.price} -> ${price}`;
});

await check("automatic persisted queries: the hash alone over GET once registered", async () => {
  const sha256 = (text) => createHash("sha256").update(text).digest("hex");
  const apollo = () => client(new PersistedQueryLink({ sha256, useGETForHashedQueries: true }));
  const query = gql`
    query CategoryNames { categories { id name } }
  `;
  const start = sent.length;
  const first = await apollo().query({ query, fetchPolicy: "network-only" });
  expect(first.data.categories.length > 0, "categories");
  // A new client (a new page load) sends the hash alone, and the server knows it.
  const second = await apollo().query({ query, fetchPolicy: "network-only" });
  expect(second.data.categories.length === first.data.categories.length, "same answer");
  const requests = sent.slice(start);
  const last = requests[requests.length - 1];
  expect(last.method === "GET", `the last request is a GET, got ${last.method}`);
  const lastUrl = new URL(last.url);
  expect(!lastUrl.searchParams.has("query"), `hash only: ${last.url}`);
  expect(lastUrl.searchParams.get("extensions")?.includes("persistedQuery"), "carries the hash");
  return requests.map((request) => request.method).join(",");
});

console.log(JSON.stringify(results));
