"""The Textual app. It reads engine events and sends Control requests; it does no tensor math."""
