package simulate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/png"
)

// Media files. With Options.BlobPaths every image, video and text file
// the team uploads carries blob_path, the key of its media object in a
// media bucket: "<project>/<type>/<file id>.<ext>". The simulator does no
// I/O: whoever publishes its events stores each object first, from
// MediaOf(body) (the demo writes them into its local media bucket, whose
// links the service signs).

// MediaObject is the media object a file stands for.
type MediaObject struct {
	Key         string // the file's blob_path
	ContentType string
	Data        []byte
}

// blobPath is the key of a file's media object, or nil for types with
// none (audio, compound).
func blobPath(project, kind string, id int) *string {
	ext := map[string]string{"image": "png", "video": "gif", "text": "txt"}[kind]
	if ext == "" {
		return nil
	}
	p := fmt.Sprintf("%s/%s/%d.%s", project, kind, id, ext)
	return &p
}

// MediaOf returns the media object of the file a diffgram.file.uploaded
// event's body uploads, and false for any other event or a file without
// blob_path. The object is made from the snapshot alone, the same every
// time: for an image a PNG of its width and height; for a video an
// animated GIF of its width and height standing in for the MP4 (a few
// frames of a car crossing); for a text file its text, whose words sit at
// the tokens' start_char and end_char.
func MediaOf(body []byte) (MediaObject, bool) {
	var ev struct {
		Type string `json:"type"`
		Data struct {
			File *file `json:"file"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &ev) != nil || ev.Type != "diffgram.file.uploaded" || ev.Data.File == nil || ev.Data.File.BlobPath == nil {
		return MediaObject{}, false
	}
	f := ev.Data.File
	obj := MediaObject{Key: *f.BlobPath}
	var buf bytes.Buffer
	switch {
	case f.Image != nil:
		obj.ContentType = "image/png"
		if err := png.Encode(&buf, scene(f.ID, f.Image.Width, f.Image.Height, 0)); err != nil {
			return MediaObject{}, false
		}
	case f.Video != nil:
		obj.ContentType = "image/gif"
		anim := &gif.GIF{}
		for frame := range 8 {
			anim.Image = append(anim.Image, scene(f.ID, f.Video.Width, f.Video.Height, frame))
			anim.Delay = append(anim.Delay, 20)
		}
		if err := gif.EncodeAll(&buf, anim); err != nil {
			return MediaObject{}, false
		}
	case f.Text != nil:
		obj.ContentType = "text/plain; charset=utf-8"
		n := 0
		for _, w := range f.Text.Tokens.Words {
			n = max(n, w.EndChar)
		}
		text := bytes.Repeat([]byte{' '}, n)
		for _, w := range f.Text.Tokens.Words {
			if w.StartChar >= 0 && w.EndChar <= n && w.EndChar-w.StartChar == len(w.Value) {
				copy(text[w.StartChar:], w.Value)
			}
		}
		buf.Write(text)
		buf.WriteByte('\n')
	default:
		return MediaObject{}, false
	}
	obj.Data = buf.Bytes()
	return obj, true
}

// scene draws a street: sky, road, and a car whose colour comes from the
// file id, frame steps of the way across.
func scene(id, w, h, frame int) *image.Paletted {
	w, h = max(w, 16), max(h, 9)
	carColour := color.RGBA{uint8(60 + id*47%190), uint8(40 + id*89%180), uint8(50 + id*23%200), 255}
	pal := color.Palette{
		color.RGBA{135, 190, 235, 255}, // sky
		color.RGBA{90, 90, 95, 255},    // road
		color.RGBA{235, 235, 225, 255}, // lane marks
		carColour,
	}
	img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	horizon := h * 11 / 20
	for y := horizon; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+w]
		for x := range row {
			row[x] = 1
			if y > h*3/4 && y < h*3/4+h/60+1 && (x/(w/16+1))%2 == 0 {
				row[x] = 2
			}
		}
	}
	cw, ch := w/6, h/8
	x0 := (id*37%w + frame*w/10) % max(w-cw, 1)
	y0 := h*13/20 + id%(h/20+1)
	for y := y0; y < min(y0+ch, h); y++ {
		for x := x0; x < min(x0+cw, w); x++ {
			img.Pix[y*img.Stride+x] = 3
		}
	}
	return img
}
