-- Every request carries a valid HS256 bearer token (minted by the harness with the
-- edge's JWT_SECRET) and an allowlisted Origin, so the edge runs its token check, its
-- per-user rate limit and CORS on each one. nginx gets the very same requests.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer @TOKEN@"
wrk.headers["Origin"] = "@ORIGIN@"
