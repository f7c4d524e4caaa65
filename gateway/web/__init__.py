"""The aiohttp layer: middlewares, proxy, gateway routes, pages; `app.py` composes them."""
