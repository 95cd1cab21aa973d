"""The API's JSON parser: RFC 8259 JSON, refused with 400 and a reason when it nests too deep
or carries strings that cannot be stored or signed (audits.safe_json)."""

import codecs

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from audits import safe_json


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError:
            raise ParseError(f"the body is not valid {encoding}") from None
        try:
            return safe_json.loads(text)
        except safe_json.UnsafeJSONError as exc:
            raise ParseError(str(exc)) from None
