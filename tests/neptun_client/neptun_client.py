"""The Python client (httpx + pydantic) from Neptun's documentation page of its Chat Files
endpoint (GET /api/users/{user_id}/chats/{chat_id}/files), as the page gives it, run against
chatfiles.

Usage: neptun_client.py BASE_URL USER_ID CHAT_ID SESSION_COOKIE MISSING_CHAT_ID
Prints one line per check; exits non-zero on any mismatch.
"""
import asyncio
import sys

# --- from Neptun's documentation page -----------------------------------------------------
from pydantic import BaseModel, HttpUrl
import httpx
from typing import List
from datetime import datetime


class ChatFile(BaseModel):
    id: int
    chat_conversation_id: int
    name: str
    size: int
    type: str
    created_at: datetime
    url: HttpUrl


class GetChatFilesResponse(BaseModel):
    chatFiles: List[ChatFile]


class ErrorData(BaseModel):
    message: str


class GetChatFilesError(BaseModel):
    statusCode: int
    statusMessage: str
    data: ErrorData


async def get_chat_files(
    user_id: str,
    chat_id: int,
    session_cookie: str
) -> GetChatFilesResponse:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{BASE_URL}/api/users/{user_id}/chats/{chat_id}/files",
            cookies={"neptun-session": session_cookie}
        )
        return GetChatFilesResponse(**response.json())
# --- end of the code from Neptun's documentation page -------------------------------------


BASE_URL = ""


async def main() -> int:
    global BASE_URL
    BASE_URL, user_id, chat_id, cookie, missing_chat = sys.argv[1:6]

    files = await get_chat_files(user_id, int(chat_id), cookie)
    assert len(files.chatFiles) == 2, files
    for f in files.chatFiles:
        assert f.created_at.tzinfo is not None, f.created_at
        assert str(f.url).startswith(BASE_URL + "/files/"), f.url
        async with httpx.AsyncClient() as client:
            body = (await client.get(str(f.url))).content
        assert len(body) == f.size, (len(body), f.size)
    print("success parsed:", [f.name for f in files.chatFiles])

    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{BASE_URL}/api/users/{user_id}/chats/{missing_chat}/files",
            cookies={"neptun-session": cookie},
        )
    assert response.status_code == 404, response.status_code
    error = GetChatFilesError(**response.json())
    assert error.statusCode == 404 and error.statusMessage == "Not Found", error
    assert error.data.message == "Chat not found", error
    print("error parsed:", error.data.message)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
