"""Serve applications (gateway, rag, agent, video, detective), each with its Gradio tab."""
