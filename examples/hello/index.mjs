// A Lambda-style handler: fnmesh runs it unmodified.
export const handler = async (event, context) => {
  console.log(`saying hello to ${event?.name ?? 'world'}`)
  return {
    message: `hello, ${event?.name ?? 'world'}`,
    requestId: context.awsRequestId,
    function: `${context.functionName}@${context.functionVersion}`,
    remainingMs: context.getRemainingTimeInMillis()
  }
}
