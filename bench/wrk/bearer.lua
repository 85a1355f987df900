-- Every request carries the same valid bearer token (minted by the harness: HS256 with
-- the edge's JWT_SECRET, or EdDSA with the key of the JWK Set the edge fetches) and an
-- allowlisted Origin, so the edge runs its token check (answered by its verified-token
-- cache after the first request), its per-user rate limit and CORS on each one. nginx
-- gets the very same requests as the HS256 edges.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer @TOKEN@"
wrk.headers["Origin"] = "@ORIGIN@"
