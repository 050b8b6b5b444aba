"""Kubernetes side of the platform: training Job launcher and offline manifest checks."""
