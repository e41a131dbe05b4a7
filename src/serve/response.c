#include "serve/response.h"

#include "core/clock.h"

#include <stdio.h>
#include <string.h>

const char *gw_status_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";   /* RFC 6585 */
    case 429: return "Too Many Requests";       /* RFC 6585 */
    case 431: return "Request Header Fields Too Large"; /* RFC 6585 */
    case 451: return "Unavailable For Legal Reasons";   /* RFC 7725 */
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 511: return "Network Authentication Required"; /* RFC 6585 */
    default: return NULL;
    }
}

const char *gw_status_reason(int status)
{
    const char *p = gw_status_phrase(status);
    return p ? p : "Unknown";
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

size_t gw_head_format(const gw_head_t *h, gw_arena_t *a, char **out)
{
    size_t need = 128 + h->status_len + GW_HTTP_DATE_LEN + h->request_id_len;
    char *buf, *p;

    for (size_t i = 0; i < h->nhdrs; i++)
        need += h->hdrs[i].name_len + h->hdrs[i].value_len + 4;
    if (!(buf = gw_arena_alloc(a, need)))
        return 0;
    p = h->http_minor ? PUT_LIT(buf, "HTTP/1.1 ") : PUT_LIT(buf, "HTTP/1.0 ");
    p = put(p, h->status, h->status_len);
    p = PUT_LIT(p, "\r\n");
    if (h->add_server)
        p = PUT_LIT(p, "Server: gangway\r\n");
    if (h->add_date) {
        p = PUT_LIT(p, "Date: ");
        p = put(p, gw_clock_http_date(), GW_HTTP_DATE_LEN);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->request_id) {
        p = PUT_LIT(p, "X-Request-Id: ");
        p = put(p, h->request_id, h->request_id_len);
        p = PUT_LIT(p, "\r\n");
    }
    for (size_t i = 0; i < h->nhdrs; i++) {
        if (h->hdrs[i].name_len == 0)
            continue; /* removed by the caller */
        p = put(p, h->hdrs[i].name, h->hdrs[i].name_len);
        p = PUT_LIT(p, ": ");
        p = put(p, h->hdrs[i].value, h->hdrs[i].value_len);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->framing == GW_FRAME_CHUNKED)
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    else if (h->add_length)
        p += sprintf(p, "Content-Length: %llu\r\n", (unsigned long long)h->content_length);
    if (!h->keep_alive)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (h->http_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    *out = buf;
    return (size_t)(p - buf);
}

size_t gw_head_simple(int status, bool keep_alive, bool is_head, const char *request_id,
                      size_t request_id_len, gw_arena_t *a, char **out)
{
    const char *reason = gw_status_reason(status);
    size_t rl = strlen(reason);
    char *buf = gw_arena_alloc(a, 220 + 2 * rl + request_id_len);
    int n;

    if (!buf)
        return 0;
    n = sprintf(buf,
                "HTTP/1.1 %d %s\r\nServer: gangway\r\nDate: %.*s\r\n%s%.*s%s"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n%s\r\n",
                status, reason, GW_HTTP_DATE_LEN, gw_clock_http_date(),
                request_id ? "X-Request-Id: " : "", request_id ? (int)request_id_len : 0,
                request_id ? request_id : "", request_id ? "\r\n" : "", rl + 1,
                keep_alive ? "" : "Connection: close\r\n");
    if (!is_head)
        n += sprintf(buf + n, "%s\n", reason);
    *out = buf;
    return (size_t)n;
}
