// Starts GraphiQL on the page Portcullis serves at GET /graphql (portcullis/graph/graphiql.py).
// A file, not an inline script: the page's Content-Security-Policy runs scripts from this
// origin only. React, ReactDOM and GraphiQL are the vendored UMD builds loaded before it.
//
// Authentication: POST /graphql needs an admin bearer token. Paste it into the Headers
// editor (the tab below the query), e.g. {"Authorization": "Bearer <token>"}, then re-fetch
// the schema (the circular-arrows button in the sidebar, or Shift+Ctrl+R). The headers are
// not persisted (shouldPersistHeaders: false): the token lives only in this page's memory.
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var endpoint = root.getAttribute("data-endpoint");
  var fetcher = GraphiQL.createFetcher({ url: endpoint });
  root.textContent = "";
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
      shouldPersistHeaders: false,
      defaultEditorToolsVisibility: "headers",
      defaultQuery: "{\n  services {\n    nodes {\n      name\n    }\n  }\n}\n",
    })
  );
})();
