"""SMS through Twilio's Messages API (2010-04-01): form POST with HTTP Basic auth.
A success is the message `sid`; a failure carries Twilio's error code and message, scrubbed.
"""

from __future__ import annotations

import re
import urllib.parse

import aiohttp

from gateway.config.messaging import TwilioProvider
from gateway.senders.http import ApiSender, is_transient
from gateway.senders.protocols import Message
from gateway.senders.retry import Attempt, Outcome

# https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource:
# a Messaging Service SID goes in `MessagingServiceSid`, a number or sender id in `From`.
_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")


def messages_url(provider: TwilioProvider) -> str:
    account = urllib.parse.quote(provider.account_sid, safe="")
    return f"{provider.base_url.rstrip('/')}/2010-04-01/Accounts/{account}/Messages.json"


def _failure(status: int, answer: dict[str, object]) -> str:
    detail = f"status {status}"
    code, text = answer.get("code"), answer.get("message")
    if isinstance(code, int | str) and code != "":
        detail += f", Twilio error {code}"
    if isinstance(text, str) and text:
        detail += f": {text}"
    return detail


async def _json_object(response: aiohttp.ClientResponse) -> dict[str, object]:
    try:
        answer = await response.json(content_type=None)
    except ValueError:  # not JSON (a proxy's HTML error page, say), or not text at all
        return {}
    return answer if isinstance(answer, dict) else {}


class TwilioSender(ApiSender[TwilioProvider]):
    name = "twilio"

    def _attempt(self, message: Message) -> Attempt:
        provider = self._provider
        url = messages_url(provider)
        sender_field = (
            "MessagingServiceSid" if _MESSAGING_SERVICE.match(provider.sender) else "From"
        )
        form = {"To": message.to, sender_field: provider.sender, "Body": message.text}
        # aiohttp 3.14 deprecates BasicAuth in favour of building the header value.
        headers = {
            "Authorization": aiohttp.encode_basic_auth(provider.account_sid, provider.auth_token)
        }

        async def attempt() -> Outcome:
            async with self._session.get().post(
                url, data=form, headers=headers, allow_redirects=False
            ) as response:
                answer = await _json_object(response)
                status = response.status
            if status in (200, 201):
                sid = answer.get("sid")
                if isinstance(sid, str) and sid:
                    return Outcome(ok=True, detail=sid)
                # Not retried: the message may well have been accepted.
                return Outcome(ok=False, detail=f"status {status} without a message sid")
            return Outcome(
                ok=False, detail=_failure(status, answer), transient=is_transient(status)
            )

        return attempt

    def _secrets(self) -> list[str]:
        return [self._provider.auth_token]
