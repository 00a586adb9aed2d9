"""The MCP adapter: every service verb as a tool an agent can call (stdio or streamable HTTP)."""
