"""Pure computation: no sockets, no asyncio, no threads, no wall clock."""
