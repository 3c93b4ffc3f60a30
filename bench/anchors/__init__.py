"""Anchors: the reference implementations each benchmark measures in the same run.

Our machines differ by up to 3x from day to day, so every performance target is a ratio
against an anchor measured beside the code under test: the Node media relay
(`node_relay.js`, for bench/gateway), the Express webhook app (`express_webhook.js`, for
bench/ingress) and the tutorial's in-process orchestration path (bench/orchestrator/tutorial.py).
`node.py` installs the Node dependencies (package-lock.json, `npm ci`) into a cache folder.
"""
