"""Objects cut along their masks, for a segmentation answer's buttons: ``✂ cut-outs`` (transparent PNG
documents, at most ten, largest first) and ``sticker`` (the largest object shown as a Telegram sticker, with a
button to add it to the person's own set: :mod:`bot.stickers`).

Both show what the answer shows now (its threshold and class filter: "only dog" and then ``sticker`` is the
largest dog), across an album's photos. The images are cut by a worker of the answer's own model from the clean
photo and the outlines kept with the answer (``jobs.render`` kinds ``cutouts`` and ``sticker``): a render,
never an inference. Which press sends, and how often, is decided by the buttons (:mod:`bot.buttons`: the
presses gate, one set per burst).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.exceptions import RedisError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, InputMediaDocument
from telegram.error import TelegramError

from bot.answers import Answer, AnswerBook, Photo
from bot.clean_images import CleanImages
from bot.i18n import N_, catalog
from bot.telegram_io import describe, reply_to
from detector.names import ClassNames
from detector.params import DetectParams
from detector.result import TASK_SEGMENT, Box
from jobs.render import KIND_CUTOUTS, KIND_STICKER, RenderClient, RenderError

log = logging.getLogger(__name__)

# Cut-outs per press: a media group holds ten documents.
MAX_CUTOUTS = 10
# The action of the button under a sticker (``a:<answer id>:sa``): into the presser's own sticker set.
ADD_STICKER = "sa"
# The buttons under a sticker that make one of another object (``a:<answer id>:o<photo>.<object>``, the object
# by its place among the photo's kept boxes): the next largest shown, at most this many.
OBJECT = "o"
OTHER_OBJECTS = 4
BUTTON_ADD = N_("button.add_sticker")
BUTTON_OBJECT = N_("button.sticker_of")


def segmented(answer: Answer) -> bool:
    """Whether the answer came from a segmentation model (its objects have outlines to cut along)."""
    return any(photo.base.get("task") == TASK_SEGMENT for photo in answer.photos)


def pieces(answer: Answer, view: DetectParams, limit: int = MAX_CUTOUTS) -> list[tuple[Photo, int, Box]]:
    """The objects ``view`` shows over the answer's photos (photo, number in its list, box), the largest (by its
    mask's area) first, at most ``limit``."""
    every = [(photo, i, box) for photo in answer.photos for i, box in enumerate(photo.shown(view).boxes)]
    return sorted(every, key=lambda piece: -piece[2].area)[:limit]


def piece_label(names: ClassNames, answer: Answer, photo: Photo, number: int, box: Box) -> str:
    """A crop's or cut-out's caption: ``2. circle 0.93`` as the answer's list numbers it (``1/2. …`` in an
    album)."""
    label = f"{number + 1}. {names.display(box.class_id, box.class_name, answer.language)} {box.confidence:.2f}"
    return f"{photo.index}/{label}" if photo.index else label


def object_action(answer: Answer, photo: Photo, box: Box) -> str | None:
    """The action of a "sticker of this object" button: the photo's place in the answer, the box's among the
    photo's kept boxes (they never change, whatever the view); None if it is not among them."""
    kept = photo.boxes()
    return f"{OBJECT}{answer.photos.index(photo)}.{kept.index(box)}" if box in kept else None


def chosen_object(answer: Answer, action: str) -> tuple[Photo, Box] | None:
    """The object an ``o<photo>.<object>`` action names, None for anything else (or out of range)."""
    photo_at, dot, box_at = action[len(OBJECT):].partition(".")
    if not (action.startswith(OBJECT) and dot and photo_at.isdigit() and box_at.isdigit()):
        return None
    if int(photo_at) >= len(answer.photos):
        return None
    kept = answer.photos[int(photo_at)].boxes()
    return (answer.photos[int(photo_at)], kept[int(box_at)]) if int(box_at) < len(kept) else None


class Cutouts:
    """Sends an answer's cut-outs and stickers (rendered by a worker of the answer's model)."""

    def __init__(self, renderer: RenderClient, clean: CleanImages, names: ClassNames, book: AnswerBook,
                 callback: Callable[[str, str], str]) -> None:
        self.renderer = renderer
        self.clean = clean
        self.names = names
        self.book = book
        self.callback = callback  # (answer id, action) -> callback_data

    async def cutouts(self, bot: Bot, answer: Answer, view: DetectParams) -> bool:
        """The objects shown now, cut along their masks, as PNG documents (one media group) under the answer."""
        chosen = pieces(answer, view)
        try:
            files: list[tuple[float, bytes, str, str]] = []
            for photo in answer.photos:
                own = [(i, box) for p, i, box in chosen if p is photo]
                if not own:
                    continue
                clean = await self.clean.get(bot, photo)
                # The worker keeps the order it is given when it is largest first already: each PNG is its box's.
                pngs = await self.renderer.render(KIND_CUTOUTS, clean.data, clean.fit([box for _, box in own]),
                                                  answer.language, queue_name=answer.queue or None)
                for (number, box), png in zip(own, pngs, strict=True):
                    name = self.names.display(box.class_id, box.class_name, answer.language)
                    files.append((box.area, png, f"{photo.index or 1}-{number + 1}-{name}.png",
                                  piece_label(self.names, answer, photo, number, box)))
            files.sort(key=lambda f: -f[0])
            reply = reply_to(answer.keyboard_message)
            if len(files) == 1:  # a media group needs two
                _, png, filename, caption = files[0]
                await bot.send_document(answer.chat_id, InputFile(png, filename=filename), caption=caption,
                                        reply_parameters=reply, message_thread_id=answer.thread,
                                        disable_content_type_detection=True)
            else:
                group = [InputMediaDocument(png, filename=filename, caption=caption,
                                            disable_content_type_detection=True)
                         for _, png, filename, caption in files]
                await bot.send_media_group(answer.chat_id, group, reply_parameters=reply,
                                           message_thread_id=answer.thread)
        except (RenderError, TelegramError, RedisError, OSError) as exc:
            log.warning("cut-outs of an answer in chat %s not sent: %s", answer.chat_id, describe(exc))
            return False
        return True

    async def sticker(self, bot: Bot, answer_id: str, answer: Answer, view: DetectParams,
                      chosen: tuple[Photo, Box] | None = None) -> bool:
        """The largest object shown now (or ``chosen``) as a sticker under the answer, with its buttons: "add to
        my sticker set", and a sticker of each of the next largest objects shown."""
        shown = pieces(answer, view, OTHER_OBJECTS + 1)
        if chosen is None:
            if not shown:
                return False
            chosen = shown[0][0], shown[0][2]
        photo, box = chosen
        try:
            clean = await self.clean.get(bot, photo)
            (webp,) = await self.renderer.render(KIND_STICKER, clean.data, clean.fit([box]), answer.language, 0,
                                                 queue_name=answer.queue or None)
            markup = self._sticker_keyboard(answer_id, answer, shown, box)
            sent = await bot.send_sticker(answer.chat_id, InputFile(webp, filename="sticker.webp"),
                                          reply_parameters=reply_to(answer.keyboard_message),
                                          message_thread_id=answer.thread, reply_markup=markup)
        except (RenderError, TelegramError, RedisError, OSError) as exc:
            log.warning("sticker of an answer in chat %s not sent: %s", answer.chat_id, describe(exc))
            return False
        try:
            await self.book.add_sticker(answer_id, sent.message_id)
        except RedisError as exc:  # the sticker is out; only its button will say it belongs elsewhere
            log.warning("sticker %s of answer %s not remembered: %s", sent.message_id, answer_id, describe(exc))
        return True

    def _sticker_keyboard(self, answer_id: str, answer: Answer, shown: list[tuple[Photo, int, Box]],
                          made: Box) -> InlineKeyboardMarkup:
        """➕ into the person's set; then "sticker of 2 · circle" for the next largest objects shown (numbered as
        the answer's list and image number them)."""
        tr = catalog(answer.language)
        rows = [[InlineKeyboardButton(tr.gettext(BUTTON_ADD), callback_data=self.callback(answer_id, ADD_STICKER))]]
        others: list[InlineKeyboardButton] = []
        for photo, number, box in shown:
            action = object_action(answer, photo, box)
            if box == made or action is None or len(others) >= OTHER_OBJECTS:
                continue
            name = self.names.display(box.class_id, box.class_name, answer.language)
            place = f"{photo.index}/{number + 1}" if photo.index else str(number + 1)
            others.append(InlineKeyboardButton(tr.gettext(BUTTON_OBJECT, number=place, name=name),
                                               callback_data=self.callback(answer_id, action)))
        rows += [others[i:i + 2] for i in range(0, len(others), 2)]  # two a row: the labels are long
        return InlineKeyboardMarkup(rows)
