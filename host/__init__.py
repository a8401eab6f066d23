"""Host controller: transports chosen by pen URL, asyncio core with a sync facade, safety."""
