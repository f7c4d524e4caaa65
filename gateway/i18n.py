"""Message catalogs for the gateway's own pages, and the choice of language.

Languages: en, nl, nb, de, fr, ru (the languages of the CRMs our users run). A message
missing in a language falls back to English, never to a key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

LANGUAGES = ("en", "nl", "nb", "de", "fr", "ru")
DEFAULT = "en"

# Norwegian: browsers send nb, no or nn; all read Bokmål here.
_ALIASES = {"no": "nb", "nn": "nb"}

CATALOG: dict[str, dict[str, str]] = {
    "en": {
        "error.ip_denied.title": "Access denied from this IP address",
        "error.ip_denied.body": "Your organisation does not allow access to the CRM from the network you are using. Connect from the office or the VPN, or ask your IT department to allow this address.",
        "error.path_not_allowed.title": "You do not have access to this page",
        "error.path_not_allowed.body": "Your account may not open this part of the CRM. If you need it, ask your IT department.",
        "error.title": "Something went wrong",
        "error.request_id": "Reference",
        "error.upstream_unavailable.title": "The CRM is not answering",
        "error.upstream_unavailable.body": "The gateway could not reach the CRM. Please try again in a minute. If it keeps happening, contact your IT department.",
        "error.upstream_timeout.title": "The CRM took too long to answer",
        "error.upstream_timeout.body": "Your request reached the CRM, but no answer came in time. Please try again. If it keeps happening, contact your IT department.",
        "error.bad_request.title": "This request could not be understood",
        "error.bad_request.body": "The address or the data sent could not be read. Go back and try again.",
        "error.not_found.title": "Page not found",
        "error.not_found.body": "There is no page at this address.",
        "error.store_unavailable.title": "Sign-in is temporarily unavailable",
        "error.store_unavailable.body": "The gateway cannot check your sign-in right now, so it lets nobody through. Please try again in a minute.",
        "error.internal_error.title": "Something went wrong",
        "error.internal_error.body": "An unexpected error occurred. Please try again. If it keeps happening, contact your IT department.",
        "error.back": "Go to the start page",
    },
    "nl": {
        "error.ip_denied.title": "Toegang geweigerd vanaf dit IP-adres",
        "error.ip_denied.body": "Uw organisatie staat geen toegang tot het CRM toe vanaf het netwerk dat u nu gebruikt. Maak verbinding vanaf kantoor of via de VPN, of vraag uw IT-afdeling dit adres toe te staan.",
        "error.path_not_allowed.title": "U hebt geen toegang tot deze pagina",
        "error.path_not_allowed.body": "Uw account mag dit deel van het CRM niet openen. Hebt u het nodig, vraag het dan aan uw IT-afdeling.",
        "error.title": "Er is iets misgegaan",
        "error.request_id": "Referentie",
        "error.upstream_unavailable.title": "Het CRM reageert niet",
        "error.upstream_unavailable.body": "De gateway kon het CRM niet bereiken. Probeer het over een minuut opnieuw. Blijft het gebeuren, neem dan contact op met uw IT-afdeling.",
        "error.upstream_timeout.title": "Het CRM reageerde te laat",
        "error.upstream_timeout.body": "Uw verzoek heeft het CRM bereikt, maar er kwam niet op tijd een antwoord. Probeer het opnieuw. Blijft het gebeuren, neem dan contact op met uw IT-afdeling.",
        "error.bad_request.title": "Dit verzoek kon niet worden gelezen",
        "error.bad_request.body": "Het adres of de verzonden gegevens konden niet worden gelezen. Ga terug en probeer het opnieuw.",
        "error.not_found.title": "Pagina niet gevonden",
        "error.not_found.body": "Op dit adres staat geen pagina.",
        "error.store_unavailable.title": "Inloggen is tijdelijk niet mogelijk",
        "error.store_unavailable.body": "De gateway kan uw aanmelding nu niet controleren en laat daarom niemand door. Probeer het over een minuut opnieuw.",
        "error.internal_error.title": "Er is iets misgegaan",
        "error.internal_error.body": "Er is een onverwachte fout opgetreden. Probeer het opnieuw. Blijft het gebeuren, neem dan contact op met uw IT-afdeling.",
        "error.back": "Naar de startpagina",
    },
    "nb": {
        "error.ip_denied.title": "Tilgang nektet fra denne IP-adressen",
        "error.ip_denied.body": "Organisasjonen din tillater ikke tilgang til CRM-systemet fra nettverket du bruker nå. Koble til fra kontoret eller via VPN, eller be IT-avdelingen om å tillate denne adressen.",
        "error.path_not_allowed.title": "Du har ikke tilgang til denne siden",
        "error.path_not_allowed.body": "Kontoen din har ikke tilgang til denne delen av CRM-systemet. Trenger du det, spør IT-avdelingen.",
        "error.title": "Noe gikk galt",
        "error.request_id": "Referanse",
        "error.upstream_unavailable.title": "CRM-systemet svarer ikke",
        "error.upstream_unavailable.body": "Gatewayen fikk ikke kontakt med CRM-systemet. Prøv igjen om et minutt. Hvis det fortsetter, kontakt IT-avdelingen.",
        "error.upstream_timeout.title": "CRM-systemet brukte for lang tid",
        "error.upstream_timeout.body": "Forespørselen nådde CRM-systemet, men svaret kom ikke i tide. Prøv igjen. Hvis det fortsetter, kontakt IT-avdelingen.",
        "error.bad_request.title": "Forespørselen kunne ikke leses",
        "error.bad_request.body": "Adressen eller dataene som ble sendt, kunne ikke leses. Gå tilbake og prøv igjen.",
        "error.not_found.title": "Siden finnes ikke",
        "error.not_found.body": "Det finnes ingen side på denne adressen.",
        "error.store_unavailable.title": "Innlogging er midlertidig utilgjengelig",
        "error.store_unavailable.body": "Gatewayen kan ikke kontrollere innloggingen din akkurat nå, og slipper derfor ingen inn. Prøv igjen om et minutt.",
        "error.internal_error.title": "Noe gikk galt",
        "error.internal_error.body": "En uventet feil oppstod. Prøv igjen. Hvis det fortsetter, kontakt IT-avdelingen.",
        "error.back": "Til startsiden",
    },
    "de": {
        "error.ip_denied.title": "Zugriff von dieser IP-Adresse verweigert",
        "error.ip_denied.body": "Ihre Organisation erlaubt keinen Zugriff auf das CRM aus dem Netzwerk, das Sie gerade nutzen. Verbinden Sie sich aus dem Büro oder über das VPN, oder bitten Sie Ihre IT-Abteilung, diese Adresse freizugeben.",
        "error.path_not_allowed.title": "Sie haben keinen Zugriff auf diese Seite",
        "error.path_not_allowed.body": "Ihr Konto darf diesen Bereich des CRM nicht öffnen. Wenn Sie ihn brauchen, wenden Sie sich an Ihre IT-Abteilung.",
        "error.title": "Etwas ist schiefgelaufen",
        "error.request_id": "Referenz",
        "error.upstream_unavailable.title": "Das CRM antwortet nicht",
        "error.upstream_unavailable.body": "Das Gateway konnte das CRM nicht erreichen. Bitte versuchen Sie es in einer Minute erneut. Wenn das Problem bleibt, wenden Sie sich an Ihre IT-Abteilung.",
        "error.upstream_timeout.title": "Das CRM hat zu lange gebraucht",
        "error.upstream_timeout.body": "Ihre Anfrage hat das CRM erreicht, aber die Antwort kam nicht rechtzeitig. Bitte versuchen Sie es erneut. Wenn das Problem bleibt, wenden Sie sich an Ihre IT-Abteilung.",
        "error.bad_request.title": "Diese Anfrage konnte nicht gelesen werden",
        "error.bad_request.body": "Die Adresse oder die gesendeten Daten konnten nicht gelesen werden. Gehen Sie zurück und versuchen Sie es erneut.",
        "error.not_found.title": "Seite nicht gefunden",
        "error.not_found.body": "Unter dieser Adresse gibt es keine Seite.",
        "error.store_unavailable.title": "Die Anmeldung ist vorübergehend nicht möglich",
        "error.store_unavailable.body": "Das Gateway kann Ihre Anmeldung gerade nicht prüfen und lässt deshalb niemanden durch. Bitte versuchen Sie es in einer Minute erneut.",
        "error.internal_error.title": "Etwas ist schiefgelaufen",
        "error.internal_error.body": "Ein unerwarteter Fehler ist aufgetreten. Bitte versuchen Sie es erneut. Wenn das Problem bleibt, wenden Sie sich an Ihre IT-Abteilung.",
        "error.back": "Zur Startseite",
    },
    "fr": {
        "error.ip_denied.title": "Accès refusé à partir de cette adresse IP",
        "error.ip_denied.body": "Votre organisation n’autorise pas l’accès au CRM depuis le réseau que vous utilisez. Connectez-vous depuis le bureau ou via le VPN, ou demandez à votre service informatique d’autoriser cette adresse.",
        "error.path_not_allowed.title": "Vous n’avez pas accès à cette page",
        "error.path_not_allowed.body": "Votre compte ne peut pas ouvrir cette partie du CRM. Si vous en avez besoin, adressez-vous à votre service informatique.",
        "error.title": "Un problème est survenu",
        "error.request_id": "Référence",
        "error.upstream_unavailable.title": "Le CRM ne répond pas",
        "error.upstream_unavailable.body": "La passerelle n’a pas pu joindre le CRM. Réessayez dans une minute. Si le problème persiste, contactez votre service informatique.",
        "error.upstream_timeout.title": "Le CRM a mis trop de temps à répondre",
        "error.upstream_timeout.body": "Votre demande a atteint le CRM, mais la réponse n’est pas arrivée à temps. Réessayez. Si le problème persiste, contactez votre service informatique.",
        "error.bad_request.title": "Cette demande n’a pas pu être lue",
        "error.bad_request.body": "L’adresse ou les données envoyées n’ont pas pu être lues. Revenez en arrière et réessayez.",
        "error.not_found.title": "Page introuvable",
        "error.not_found.body": "Il n’y a pas de page à cette adresse.",
        "error.store_unavailable.title": "La connexion est temporairement indisponible",
        "error.store_unavailable.body": "La passerelle ne peut pas vérifier votre connexion pour le moment et ne laisse donc passer personne. Réessayez dans une minute.",
        "error.internal_error.title": "Un problème est survenu",
        "error.internal_error.body": "Une erreur inattendue s’est produite. Réessayez. Si le problème persiste, contactez votre service informatique.",
        "error.back": "Aller à la page d’accueil",
    },
    "ru": {
        "error.ip_denied.title": "Доступ с этого IP-адреса запрещён",
        "error.ip_denied.body": "Ваша организация не разрешает доступ к CRM из сети, которую вы сейчас используете. Подключитесь из офиса или через VPN либо попросите ИТ-отдел разрешить этот адрес.",
        "error.path_not_allowed.title": "У вас нет доступа к этой странице",
        "error.path_not_allowed.body": "Вашей учётной записи не разрешено открывать этот раздел CRM. Если он вам нужен, обратитесь в ИТ-отдел.",
        "error.title": "Что-то пошло не так",
        "error.request_id": "Номер обращения",
        "error.upstream_unavailable.title": "CRM не отвечает",
        "error.upstream_unavailable.body": "Шлюз не смог связаться с CRM. Повторите попытку через минуту. Если ошибка повторяется, обратитесь в ИТ-отдел.",
        "error.upstream_timeout.title": "CRM отвечает слишком долго",
        "error.upstream_timeout.body": "Ваш запрос дошёл до CRM, но ответ не пришёл вовремя. Повторите попытку. Если ошибка повторяется, обратитесь в ИТ-отдел.",
        "error.bad_request.title": "Не удалось разобрать запрос",
        "error.bad_request.body": "Адрес или отправленные данные не удалось прочитать. Вернитесь назад и попробуйте ещё раз.",
        "error.not_found.title": "Страница не найдена",
        "error.not_found.body": "По этому адресу страницы нет.",
        "error.store_unavailable.title": "Вход временно недоступен",
        "error.store_unavailable.body": "Шлюз сейчас не может проверить ваш вход и поэтому никого не пропускает. Повторите попытку через минуту.",
        "error.internal_error.title": "Что-то пошло не так",
        "error.internal_error.body": "Произошла непредвиденная ошибка. Повторите попытку. Если ошибка повторяется, обратитесь в ИТ-отдел.",
        "error.back": "На главную страницу",
    },
}


def negotiate(accept_language: str) -> str:
    """The best of our languages for an Accept-Language header (RFC 9110 §12.5.4)."""
    best, best_q = DEFAULT, 0.0
    for position, item in enumerate(accept_language.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = _ALIASES.get(tag.strip().lower().split("-")[0], tag.strip().lower().split("-")[0])
        # Earlier entries win ties, as browsers list them in preference order.
        score = q - position * 1e-6
        if primary in CATALOG and q > 0 and score > best_q:
            best, best_q = primary, score
    return best


# Each language's name in itself, for the visible switch on every page.
NAMES = {
    "en": "English",
    "nl": "Nederlands",
    "nb": "Norsk bokmål",
    "de": "Deutsch",
    "fr": "Français",
    "ru": "Русский",
}
_LOCALES = Path(__file__).parent / "locales"


def _load_pages() -> None:
    """The sign-in pages' messages live in locales/<lang>.json (one file per translator)."""
    for language in LANGUAGES:
        path = _LOCALES / f"{language}.json"
        if path.exists():
            CATALOG.setdefault(language, {}).update(json.loads(path.read_text("utf-8")))


_load_pages()


def translate(language: str, key: str, **params: object) -> str:
    text = CATALOG.get(language, {}).get(key) or CATALOG[DEFAULT].get(key, key)
    return text.format(**params) if params else text


def plural_category(language: str, n: int) -> str:
    """CLDR plural categories for the counts we show (whole numbers only)."""
    if language == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return "one"
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return "few"
        return "many"
    if language == "fr":
        return "one" if n in (0, 1) else "other"
    return "one" if n == 1 else "other"


def _counted(language: str, prefix: str, n: int) -> str:
    """`prefix.one`, `.few`, `.many` or `.other` for `n`, as the language counts."""
    key = f"{prefix}.{plural_category(language, n)}"
    if key not in CATALOG.get(language, {}):
        key = f"{prefix}.other"
    return translate(language, key, n=n)


def duration(language: str, seconds: float) -> str:
    """`30 days`, `12 hours`, `5 minutes` in the language, in the largest whole unit."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if (seconds >= size and seconds % size == 0) or unit == "minutes":
            return _counted(language, f"duration.{unit}", max(1, round(seconds / size)))
    return ""


def time_until(language: str, seconds: float) -> str:
    """`in 5 minutes`, `через 40 секунд`: when something ends, from now, in the reader's own
    terms (no clock time in a zone they must convert). Rounded up, so nobody comes back too
    early; seconds under a minute, minutes up to an hour and a half, then hours."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return _counted(language, "until.seconds", whole)
    if whole <= 90 * 60:
        return _counted(language, "until.minutes", math.ceil(whole / 60))
    return _counted(language, "until.hours", math.ceil(whole / 3600))
