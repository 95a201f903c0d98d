"""ASGI middleware in front of the app, one concern each (outermost first):

security headers -> HEAD as GET -> the request's lease -> API key -> body limit and memory.
"""
