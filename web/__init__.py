"""The web face: an HTTP API on the detection queue and a page with a live confidence slider.

It talks to the queue only through ``jobs``' client and store, and never imports torch, ultralytics, cv2
or the detector's model code; of ``bot/`` it uses only the Telegram-free modules (texts, parsing, class
names, limits, settings, kept answers). ``detbot web`` runs it (:mod:`web.main`).
"""
