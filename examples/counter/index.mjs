// A counter behind the HTTP gateway. Its state lives in a NATS KV bucket reached through the
// `counts` binding (fnmesh.yaml), not in the function or the agent that runs it: any agent can
// serve the next request, and losing one loses nothing.
//
//   POST /count/{name}  adds one (compare-and-set: concurrent requests never lose an increment)
//   GET  /count/{name}  reads it
export const handler = async (event, context) => {
  const counts = context.bindings.counts
  const name = event.pathParameters?.name ?? ''
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    return { statusCode: 400, body: JSON.stringify({ error: 'a counter name is 1-64 letters, digits, "-" or "_"' }) }
  }
  if (event.requestContext.http.method === 'GET') {
    const entry = await counts.get(name)
    return { name, count: entry == null ? 0 : Number(entry.value) }
  }
  for (;;) {
    const entry = await counts.get(name)
    const count = (entry == null ? 0 : Number(entry.value)) + 1
    try {
      // revision 0: "must not exist yet"; otherwise the revision just read
      await counts.put(name, String(count), { revision: entry?.revision ?? 0 })
      return { name, count }
    } catch (err) {
      if (err.code !== 'FNMESH_ERR_CONFLICT') throw err // someone else wrote first: read again
    }
  }
}
