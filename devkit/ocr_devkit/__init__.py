"""Development tools: the offline DashScope emulator, the local AWS stack and the `ocr-pipeline` CLI.

Nothing here is part of the Lambda layer.
"""
