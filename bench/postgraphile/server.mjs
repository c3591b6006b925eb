// PostGraphile 5 over the PipeCD database, as a user would run it for GraphQL over Postgres with RLS: it logs in
// as the same `authenticator` login PipeCD uses, verifies the same bearer token, and runs each request as role
// `authenticated` with the token's claims in `request.jwt.claims`, so the same RLS policies decide what it sees.
// Usage: DATABASE_URL=... JWT_SECRET=... PORT=... node server.mjs
import { createServer } from "node:http";
import jwt from "jsonwebtoken";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const secret = process.env.JWT_SECRET;
const port = Number(process.env.PORT ?? 5678);

function claims(req) {
  const header = req?.headers?.authorization ?? "";
  const token = header.startsWith("Bearer ") ? header.slice(7) : null;
  if (!token) return null;
  return jwt.verify(token, secret, { algorithms: ["HS256"], audience: "authenticated" });
}

const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [makePgService({ connectionString: process.env.DATABASE_URL, schemas: ["public"], poolConfig: { max: 10 } })],
  grafast: {
    context(requestContext) {
      const verified = claims(requestContext.node?.req);
      if (!verified) return { pgSettings: { role: "anon" } };
      return { pgSettings: { role: "authenticated", "request.jwt.claims": JSON.stringify(verified) } };
    },
  },
  grafserv: { graphqlPath: "/graphql", watch: false, port },
  schema: { exportSchemaSDLPath: undefined },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
serv.addTo(server).then(() => server.listen(port, "127.0.0.1", () => console.log(`postgraphile on ${port}`)));
