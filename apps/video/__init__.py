"""Video analysis: find the moment in a video by what is said, shown or written in it.

Layout (each module small, heavy imports inside functions):
- probe.py     bounded probe of untrusted files in a killable subprocess (limits from VideoConfig.limits)
- decode.py    PyAV decode + frame sampling (uniform / keyframes / scene) + audio, in one demux pass
- scenes.py    cut detection from colour histograms, segments with start/end
- ocr.py, asr.py, features.py   RapidOCR, faster-whisper (word timestamps), visual + text embeddings
- pipeline.py  the stages, run single-process or as a Ray Data pipeline with actor pools
- store.py     Qdrant (named vectors per modality) behind a small class
- index.py     ingest/search/analysis records on disk; analyze.py key moments + summary
- cli.py, serve.py, ui.py   `conductor video`, `/v1/video`, the Gradio Video tab
"""
