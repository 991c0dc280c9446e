// Suite-wide setup. Owned by the test harness (throwaway PostgreSQL and Redis).
export default async function setup(): Promise<void> {}
