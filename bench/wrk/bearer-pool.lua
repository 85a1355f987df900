-- One distinct bearer token per request: the harness writes the tokens (all valid, all
-- of one user, @TOKENS@, one a line) and this sends them in turn, each request with an
-- allowlisted Origin. Every request string is built once at start, so the per-request
-- cost on wrk's side is a table lookup. With more tokens than the edge's verified-token
-- cache holds, that cache never answers: each request pays the full signature check.
local requests = {}
local next_request = 0

function init(args)
  for token in io.lines("@TOKENS@") do
    if token ~= "" then
      requests[#requests + 1] = wrk.format("GET", nil, {
        ["Host"] = wrk.headers["Host"],
        ["Authorization"] = "Bearer " .. token,
        ["Origin"] = "@ORIGIN@",
      })
    end
  end
  if #requests == 0 then
    error("no tokens in @TOKENS@")
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
