"""goodmem-operator: GoodMem LLM registry entries managed as Kubernetes `LLM` resources."""

__version__ = "0.1.0"
